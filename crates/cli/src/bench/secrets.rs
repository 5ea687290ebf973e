//! P15 (issue 19): what injecting a secret adds to one HTTPS request. A
//! loopback HTTPS server with its own certificate plays an API that
//! answers 200 only with the token. Through the host: `CONNECT` on a
//! session's proxy socket (as the sandbox's forwarder sends it), TLS to
//! the proxy under the install's CA, `GET` → the proxy looks the host up in
//! the secret store, puts the token in, opens verified TLS to the server,
//! relays the answer, audits the use. Baseline: the same `GET` over a fresh
//! TLS connection straight to the server (no token: it answers 401, the
//! same size of work for the server), in the same run, alternating.

use std::io::{Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use super::harness::WarmHost;
use super::*;

const TOKEN: &str = "bench-token-not-a-secret";

/// An HTTPS server on 127.0.0.1; returns its port and certificate (DER).
fn serve_api() -> Result<(u16, Vec<u8>)> {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])?;
    let der = ck.cert.der().to_vec();
    let cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(der.clone())],
            rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into()),
        )?,
    );
    let l = TcpListener::bind("127.0.0.1:0").context("binding the bench's API server")?;
    let port = l.local_addr()?.port();
    std::thread::spawn(move || {
        for tcp in l.incoming().flatten() {
            let _ = tcp.set_nodelay(true);
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                    return;
                };
                let mut s = rustls::StreamOwned::new(conn, tcp);
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let authed = String::from_utf8_lossy(&head)
                    .contains(&format!("authorization: Bearer {TOKEN}"));
                let (status, body) = if authed {
                    ("200 OK", r#"{"login":"bench"}"#)
                } else {
                    ("401 Unauthorized", r#"{"message":"no token"}"#)
                };
                let _ = write!(s, "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                s.conn.send_close_notify();
                let _ = s.flush();
            });
        }
    });
    Ok((port, der))
}

fn client(root: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(root.to_vec()))?;
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    ))
}

/// One GET over TLS on `io`; returns the status line.
fn get<S: Read + std::io::Write>(
    io: S,
    tls: &Arc<rustls::ClientConfig>,
    port: u16,
) -> Result<String> {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let conn = rustls::ClientConnection::new(tls.clone(), name)?;
    let mut s = rustls::StreamOwned::new(conn, io);
    write!(
        s,
        "GET /user HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    let text = String::from_utf8_lossy(&out);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

fn direct(tls: &Arc<rustls::ClientConfig>, port: u16) -> Result<()> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_nodelay(true)?;
    let st = get(tcp, tls, port)?;
    if !st.starts_with("HTTP/1.1 401") {
        bail!("the API answered {st:?} to a request without the token");
    }
    Ok(())
}

fn injected(sock: &Path, tls: &Arc<rustls::ClientConfig>, port: u16) -> Result<()> {
    let mut u =
        UnixStream::connect(sock).with_context(|| format!("connecting to {}", sock.display()))?;
    write!(
        u,
        "CONNECT 127.0.0.1:{port} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if u.read(&mut b)? == 0 {
            bail!("the proxy closed the tunnel");
        }
        head.push(b[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        bail!(
            "the proxy refused the tunnel: {}",
            String::from_utf8_lossy(&head)
        );
    }
    let st = get(u, tls, port)?;
    if !st.starts_with("HTTP/1.1 200") {
        bail!("the API answered {st:?}: the token was not injected");
    }
    Ok(())
}

impl Bench {
    pub(super) async fn secrets(&self, kind: Kind) -> Result<Row> {
        use pinch_host::secrets::{Approve, Form, NewSecret, Store, Value};
        let n = self.n(200);
        eprintln!("pinch bench: P15 ({n} iterations)…");
        let (port, api_der) = serve_api()?;
        let dir = self.temp_dir("secrets")?;
        let mut cfg = self.host_config(dir.path(), kind);
        // The key is kept apart from the data dir, as the store insists.
        let key_dir = self.temp_dir("secrets-key")?;
        let key = key_dir.path().join("secrets.key");
        cfg.secrets_key_file = Some(key.clone());
        cfg.proxy_extra_roots = vec![api_der.clone()];
        std::fs::create_dir_all(&cfg.data_dir)?;
        Store::new(&cfg.data_dir, key).add(
            &NewSecret {
                name: "bench".into(),
                form: Form::Bearer,
                hosts: vec![format!("127.0.0.1:{port}")],
                groups: vec!["main".into()],
                approve: Approve::Never,
            },
            &Value::Token {
                value: TOKEN.into(),
            },
        )?;
        let data = cfg.data_dir.clone();
        let h = WarmHost::start_with(cfg).await?;
        let sock = data.join("run/proxy").join(&h.session.id).join("llm.sock");
        let ca_pem =
            std::fs::read_to_string(data.join("ca/ca.pem")).context("reading the install's CA")?;
        let res = tokio::task::spawn_blocking(move || {
            let ca_der =
                pinch_host::secrets::ca::pem_der(&ca_pem).context("the install's CA is not PEM")?;
            let (to_api, to_proxy) = (client(&api_der)?, client(&ca_der)?);
            let (mut d, mut p) = (Vec::with_capacity(n), Vec::with_capacity(n));
            // One of each first, unmeasured: the leaf certificate is made.
            direct(&to_api, port)?;
            injected(&sock, &to_proxy, port)?;
            for _ in 0..n {
                let t0 = Instant::now();
                direct(&to_api, port)?;
                d.push(t0.elapsed());
                let t0 = Instant::now();
                injected(&sock, &to_proxy, port)?;
                p.push(t0.elapsed());
            }
            Ok::<_, anyhow::Error>((p, d))
        })
        .await
        .context("the P15 driver thread")?;
        let down = h.shutdown().await;
        let (p, d) = res?;
        down?;
        let (ps, ds) = (Summary::of(p), Summary::of(d));
        let added = ps.median.saturating_sub(ds.median);
        Ok(Row {
            fig: Fig::P15,
            sandbox: kind,
            measured: Measured::Latency(ps),
            baseline: Some(Baseline {
                what: "direct HTTPS GET".into(),
                summary: ds,
                per_s: None,
            }),
            notes: vec![format!(
                "added by the injection: {:.2} ms at the median",
                added.as_secs_f64() * 1000.0
            )],
        })
    }
}
