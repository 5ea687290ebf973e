//! Test support (feature `test-support`): a real HTTP/1.1 server on an
//! ephemeral loopback port that answers from a plain function, so tests of
//! `web_fetch` — this crate's and the end-to-end ones — share one.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// (status, extra headers, body), or `None` for a connection held open
/// without an answer until the client closes it.
pub type Answer = Option<(u16, Vec<(String, String)>, Vec<u8>)>;
/// The site: (request path with its query, the server's port) → answer.
pub type Route = fn(&str, u16) -> Answer;

pub struct Server {
    pub port: u16,
    /// Requests answered or held so far.
    pub hits: Arc<AtomicUsize>,
    /// Each request's head (request line and headers, lowercase names).
    pub heads: Arc<Mutex<Vec<String>>>,
    /// Each request's body (at most [`MAX_BODY`] bytes of it).
    pub bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// The most of a request's body the server reads and keeps.
pub const MAX_BODY: usize = 32 << 20;

/// Starts the server; a thread per connection, one request each.
pub fn serve(route: Route) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = heads.clone();
    let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let counted = counted.clone();
            let seen = seen.clone();
            let kept = kept.clone();
            std::thread::spawn(move || {
                let Ok(read_half) = s.try_clone() else { return };
                let mut r = BufReader::new(read_half);
                let mut line = String::new();
                r.read_line(&mut line).unwrap_or(0);
                let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                let mut head = line.clone();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    head.push_str(&h.to_ascii_lowercase());
                }
                // Read the body too: closing with unread bytes sends a
                // reset that can destroy the answer in flight.
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0usize);
                let mut body_in = vec![0u8; len.min(MAX_BODY)];
                let _ = std::io::Read::read_exact(&mut r, &mut body_in);
                if let (Ok(mut v), Ok(mut b)) = (seen.lock(), kept.lock()) {
                    v.push(head);
                    b.push(body_in);
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let Some((status, headers, body)) = route(&path, port) else {
                    // Never answered: wait for the client to give up.
                    let _ = std::io::copy(&mut r, &mut std::io::sink());
                    return;
                };
                let mut s = s;
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body);
            });
        }
    });
    Server {
        port,
        hits,
        heads,
        bodies,
    }
}

/// One header, for an [`Answer`].
pub fn header(k: &str, v: &str) -> Vec<(String, String)> {
    vec![(k.to_owned(), v.to_owned())]
}
