//! The one HTTP listener the HTTP-facing adapters share (web chat,
//! webhooks; later Telegram's webhook mode): axum on the host's tokio
//! runtime. Each adapter contributes an [`axum::Router`]; the host merges
//! them and serves the result on one address (default `127.0.0.1:7878`,
//! off unless configured).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use axum;
pub use axum::Router;

/// A running listener; [`Server::stop`] releases the port.
pub struct Server {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
}

/// Binds `addr` (a clear error naming it when taken or not allowed).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e} (choose another address with [http] listen in pinch.toml)"))
    })
}

/// Serves `router` on `listener` until [`Server::stop`].
pub fn serve(listener: TcpListener, router: Router) -> std::io::Result<Server> {
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let join = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%addr, "the HTTP listener failed: {e}");
        }
    });
    tracing::info!(%addr, "HTTP listener ready");
    Ok(Server { addr, stop, join })
}

impl Server {
    /// Stops accepting; open connections get `grace` to finish, then the
    /// listener task is dropped (so the port is free on return).
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut join = self.join;
        if tokio::time::timeout(grace, &mut join).await.is_err() {
            join.abort();
            let _ = join.await;
        }
    }
}

/// Constant-time equality of two secrets (tokens, signatures).
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    // ring compares in time independent of the contents (lengths may leak,
    // which for fixed-length tokens says nothing).
    #[allow(deprecated)]
    ring::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// `HMAC-SHA256(secret, body)` as lower-case hex.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    hex(ring::hmac::sign(&key, body).as_ref())
}

/// Runs `f` on a future for its side effect with a deadline (used to bound
/// waits on the host inside handlers).
pub async fn within<T>(d: Duration, f: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(d, f).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_the_rfc_4231_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(secret_eq(b"abc", b"abc"));
        assert!(!secret_eq(b"abc", b"abd"));
        assert!(!secret_eq(b"abc", b"abcd"));
    }
}
