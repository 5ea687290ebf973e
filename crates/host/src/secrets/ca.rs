//! The per-install CA (decision 0050): made at the host's first start in
//! `<data>/ca/` (its key 0600, never mounted anywhere), it signs a leaf
//! certificate for each host whose requests the proxy opens to inject a
//! secret. Sandboxes trust it through `<data>/ca/trust/`, bound read-only
//! over `/etc/ssl/certs`: `ca-certificates.crt` there is the host's own
//! bundle plus this CA, and `pinch-ca.pem` is this CA alone (for
//! `NODE_EXTRA_CA_CERTS`). Nothing else in the sandbox changes: every
//! other host's TLS still runs end to end through the tunnel, verified by
//! the client against the same public roots.

use std::collections::HashMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The folder under the data dir.
pub const DIR: &str = "ca";
/// The trust folder's name under [`DIR`].
pub const TRUST: &str = "trust";
/// The bundle file's name (Debian's system bundle path).
pub const BUNDLE: &str = "ca-certificates.crt";
/// The CA alone.
pub const CA_PEM: &str = "pinch-ca.pem";
/// The host's bundles tried, first found wins.
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];
/// Leaves are made again after this (they are valid for 30 days).
const LEAF_FRESH: Duration = Duration::from_secs(24 * 3600);
/// Most leaves held.
const MAX_LEAVES: usize = 256;

/// The environment every sandboxed program gets so its TLS trusts the CA,
/// with the trust folder at `dir` (as the program sees it).
pub fn trust_env(dir: &Path) -> Vec<(String, String)> {
    let at = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let mut v: Vec<(String, String)> = [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
    ]
    .into_iter()
    .map(|k| (k.to_owned(), at(BUNDLE)))
    .collect();
    v.push(("NODE_EXTRA_CA_CERTS".into(), at(CA_PEM)));
    v
}

/// The CA, and the leaves it made (cached per host).
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_der: rustls::pki_types::CertificateDer<'static>,
    trust_dir: PathBuf,
    leaves: Mutex<HashMap<String, (Instant, Arc<rustls::ServerConfig>)>>,
}

fn params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "pinch sandbox CA (this install only)");
    p.distinguished_name.push(DnType::OrganizationName, "pinch");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// Sets `p`'s validity: from two days ago to `days` from now (whole days, UTC).
fn validity(p: &mut CertificateParams, days: i64) {
    let ymd = |t: jiff::Timestamp| {
        let d = t.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
        (i32::from(d.year()), d.month() as u8, d.day() as u8)
    };
    let now = jiff::Timestamp::now();
    let (y, m, d) = ymd(now - jiff::SignedDuration::from_hours(48));
    p.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(now + jiff::SignedDuration::from_hours(24 * days));
    p.not_after = rcgen::date_time_ymd(y, m, d);
}

/// Writes a file via a temporary name and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(&format!("writing {}", path.display()), e)
        })
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl Ca {
    /// Loads the CA from `<data_root>/ca/`, making it if absent, and
    /// (re)writes the trust folder.
    pub fn load_or_create(data_root: &Path) -> Result<Ca, String> {
        let dir = data_root.join(DIR);
        std::fs::create_dir_all(&dir)
            .map_err(|e| err(&format!("creating {}", dir.display()), e))?;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        let (key_path, cert_path) = (dir.join("ca.key"), dir.join("ca.pem"));
        let key = match std::fs::read_to_string(&key_path) {
            Ok(pem) => KeyPair::from_pem(&pem).map_err(|e| {
                err(&format!("{} is not a key (remove {} to make a new CA; sandboxes trust the new one at their next start)", key_path.display(), dir.display()), e)
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate().map_err(|e| err("making the CA key", e))?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&key_path)
                    .map_err(|e| err(&format!("creating {}", key_path.display()), e))?;
                std::io::Write::write_all(&mut f, key.serialize_pem().as_bytes())
                    .map_err(|e| err(&format!("writing {}", key_path.display()), e))?;
                let _ = std::fs::remove_file(&cert_path);
                tracing::info!(dir = %dir.display(), "made this install's sandbox CA");
                key
            }
            Err(e) => return Err(err(&format!("reading {}", key_path.display()), e)),
        };
        let mut p = params();
        validity(&mut p, 3650);
        let cert_pem = match std::fs::read_to_string(&cert_path) {
            Ok(pem) => pem,
            Err(_) => {
                let cert = p
                    .self_signed(&key)
                    .map_err(|e| err("making the CA certificate", e))?;
                let pem = cert.pem();
                write_atomic(&cert_path, pem.as_bytes())?;
                pem
            }
        };
        let cert_der =
            rustls::pki_types::CertificateDer::from(pem_der(&cert_pem).ok_or_else(|| {
                format!(
                    "{} is not a certificate (remove it: it is made again from the key)",
                    cert_path.display()
                )
            })?);
        let trust_dir = dir.join(TRUST);
        write_trust(&trust_dir, &cert_pem)?;
        Ok(Ca {
            issuer: Issuer::new(params(), key),
            cert_der,
            trust_dir,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The folder bound over `/etc/ssl/certs` in sandboxes.
    pub fn trust_dir(&self) -> &Path {
        &self.trust_dir
    }

    /// The CA's certificate (DER).
    pub fn cert_der(&self) -> &rustls::pki_types::CertificateDer<'static> {
        &self.cert_der
    }

    /// A TLS server configuration presenting a leaf for `host` (a name or
    /// an IP address), made on first use and kept for a day.
    pub fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, String> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host = host.as_str();
        let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((made, cfg)) = leaves.get(host) {
            if made.elapsed() < LEAF_FRESH {
                return Ok(cfg.clone());
            }
        }
        let mut p = CertificateParams::new(vec![host.to_owned()])
            .map_err(|e| err(&format!("a certificate for {host}"), e))?;
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, host);
        p.is_ca = IsCa::NoCa;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut p, 30);
        let key = KeyPair::generate().map_err(|e| err("making a leaf key", e))?;
        let cert = p
            .signed_by(&key, &self.issuer)
            .map_err(|e| err(&format!("signing a certificate for {host}"), e))?;
        let chain = vec![cert.der().clone(), self.cert_der.clone()];
        let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| err("the leaf certificate", e))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let cfg = Arc::new(cfg);
        if leaves.len() >= MAX_LEAVES {
            leaves.clear();
        }
        leaves.insert(host.to_owned(), (Instant::now(), cfg.clone()));
        Ok(cfg)
    }
}

/// The first certificate's DER in a PEM text.
pub fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let body: String = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)?
        .split("-----END CERTIFICATE-----")
        .next()?
        .split_whitespace()
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// Writes the trust folder: the host's bundle plus the CA, and the CA.
fn write_trust(dir: &Path, ca_pem: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| err(&format!("creating {}", dir.display()), e))?;
    let mut bundle = SYSTEM_BUNDLES
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str(ca_pem);
    for (name, text) in [(BUNDLE, bundle.as_str()), (CA_PEM, ca_pem)] {
        write_atomic(&dir.join(name), text.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client trusting only the CA accepts the leaf for the name it was
    /// made for, and a reloaded CA signs leaves the first one's
    /// certificate verifies.
    #[test]
    fn leaves_verify_against_the_ca_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let key_mode = std::fs::metadata(dir.path().join("ca/ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        let bundle = std::fs::read_to_string(ca.trust_dir().join(BUNDLE)).unwrap();
        let ours = std::fs::read_to_string(ca.trust_dir().join(CA_PEM)).unwrap();
        assert!(bundle.ends_with(&ours));
        let again = Ca::load_or_create(dir.path()).unwrap();
        assert_eq!(again.cert_der(), ca.cert_der());
        for (name, c) in [("api.github.com", &ca), ("127.0.0.1", &again)] {
            let server = c.server_config(name).unwrap();
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.cert_der().clone()).unwrap();
            let client = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            let sn = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
            let mut cc = rustls::ClientConnection::new(Arc::new(client.clone()), sn).unwrap();
            let mut sc = rustls::ServerConnection::new(server.clone()).unwrap();
            handshake(&mut cc, &mut sc).unwrap();
            // The same leaf for another name is refused.
            let other = rustls::pki_types::ServerName::try_from("evil.example".to_owned()).unwrap();
            let mut cc = rustls::ClientConnection::new(Arc::new(client), other).unwrap();
            let mut sc = rustls::ServerConnection::new(server).unwrap();
            assert!(handshake(&mut cc, &mut sc).is_err(), "{name}");
        }
    }

    fn handshake(
        c: &mut rustls::ClientConnection,
        s: &mut rustls::ServerConnection,
    ) -> Result<(), rustls::Error> {
        for _ in 0..10 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets()?;
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        panic!("no handshake");
    }
}
