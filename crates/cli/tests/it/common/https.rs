//! Loopback servers for the proxy's TLS tests: a self-signed server
//! configuration, an HTTPS server that answers each request head with a
//! closure and keeps every head, and a plain HTTP one.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A rustls server configuration with a self-signed certificate for
/// `names` (DNS names or IP addresses), and that certificate as DER and
/// PEM, which a client (or the proxy, as an extra root) trusts.
pub fn self_signed(names: &[&str]) -> (Arc<rustls::ServerConfig>, Vec<u8>, String) {
    let ck = rcgen::generate_simple_self_signed(
        names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
    )
    .unwrap();
    let (cert_der, pem) = (ck.cert.der().to_vec(), ck.cert.pem());
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![rustls::pki_types::CertificateDer::from(cert_der.clone())],
        rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into()),
    )
    .unwrap();
    (Arc::new(cfg), cert_der, pem)
}

/// Reads a request head, byte by byte so nothing after it is taken;
/// `None` if the peer closed first.
pub fn read_head(r: &mut impl Read) -> Option<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if r.read(&mut b).unwrap_or(0) == 0 {
            return None;
        }
        head.push(b[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// A loopback server: its port, its certificate (DER; empty for plain
/// HTTP) and every request head it read.
pub struct FakeApi {
    pub port: u16,
    pub cert_der: Vec<u8>,
    pub heads: Arc<Mutex<Vec<String>>>,
}

/// An answer: status line's rest, content type, body.
pub type Answer = (&'static str, &'static str, Vec<u8>);

/// A loopback HTTPS server (self-signed for `127.0.0.1`) answering each
/// request head with `respond`; keeps every head.
pub fn fake_api_with(respond: impl Fn(&str) -> Answer + Send + Sync + 'static) -> FakeApi {
    let respond = Arc::new(respond);
    let (server_cfg, cert_der, _) = self_signed(&["127.0.0.1"]);
    serve(cert_der, move |tcp, heads| {
        let (cfg, respond) = (server_cfg.clone(), respond.clone());
        std::thread::spawn(move || {
            let mut s = rustls::StreamOwned::new(rustls::ServerConnection::new(cfg).unwrap(), tcp);
            let Some(head) = read_head(&mut s) else {
                return;
            };
            let (status, ctype, body) = respond(&head);
            heads.lock().unwrap().push(head);
            let _ = write!(s, "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
            let _ = s.write_all(&body);
            s.conn.send_close_notify();
            let _ = s.flush();
        });
    })
}

/// Listens on a loopback port and hands each connection, with the list of
/// heads, to `handle`.
fn serve(
    cert_der: Vec<u8>,
    handle: impl Fn(TcpStream, Arc<Mutex<Vec<String>>>) + Send + 'static,
) -> FakeApi {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let h2 = heads.clone();
    std::thread::spawn(move || {
        for tcp in l.incoming().flatten() {
            handle(tcp, h2.clone());
        }
    });
    FakeApi {
        port,
        cert_der,
        heads,
    }
}

/// A plain HTTP server on loopback that keeps each request head and
/// answers 200.
pub fn plain_server() -> FakeApi {
    serve(Vec::new(), |mut c, heads| {
        let Some(head) = read_head(&mut c) else {
            return;
        };
        heads.lock().unwrap().push(head);
        let _ =
            c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nplain");
    })
}
