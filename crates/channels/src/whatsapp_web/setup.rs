//! The bridge's install (`pinch channels whatsapp install`) and the lock
//! that keeps two bridges off one session.

use std::path::Path;

use super::{Paths, BAILEYS, BRIDGE_JS};

/// An exclusive `flock` on the session's lock file, released on drop.
pub struct Lock(std::fs::File);

impl Lock {
    /// `Ok(None)`: someone else holds it.
    pub fn take(path: &Path) -> Result<Option<Lock>, String> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            Ok(Some(Lock(f)))
        } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(format!(
                "locking {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ))
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: unlocking the descriptor this value owns.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The bridge script and its package file, written into the bridge folder
/// (an upgrade of pinch rewrites them; the script is pinch's own).
pub fn refresh_script(p: &Paths) -> Result<(), String> {
    std::fs::create_dir_all(&p.bridge)
        .map_err(|e| format!("creating {}: {e}", p.bridge.display()))?;
    let script = p.bridge.join("bridge.mjs");
    if std::fs::read(&script).ok().as_deref() != Some(BRIDGE_JS.as_bytes()) {
        crate::write_private(&script, BRIDGE_JS.as_bytes())
            .map_err(|e| format!("writing {}: {e}", script.display()))?;
    }
    let pkg = p.bridge.join("package.json");
    let body = format!(
        "{{\"name\":\"pinch-whatsapp-bridge\",\"private\":true,\"type\":\"module\",\"dependencies\":{{\"@whiskeysockets/baileys\":\"{BAILEYS}\"}}}}\n"
    );
    if std::fs::read_to_string(&pkg).ok().as_deref() != Some(body.as_str()) {
        crate::write_private(&pkg, body.as_bytes())
            .map_err(|e| format!("writing {}: {e}", pkg.display()))?;
    }
    Ok(())
}

/// Whether the pinned Baileys is installed beside the bridge.
pub fn installed(p: &Paths) -> Result<(), String> {
    let pkg = p
        .bridge
        .join("node_modules/@whiskeysockets/baileys/package.json");
    let v: serde_json::Value = std::fs::read(&pkg)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| "the bridge is not installed; run `pinch channels whatsapp install` (needs Node.js 20 or later and npm)".to_owned())?;
    match v["version"].as_str() {
        Some(BAILEYS) => Ok(()),
        other => Err(format!(
            "the bridge has Baileys {} but this pinch needs {BAILEYS}; run `pinch channels whatsapp install`",
            other.unwrap_or("?")
        )),
    }
}

/// `npm install` of the pinned Baileys into the bridge folder.
pub fn install(p: &Paths, npm: &str) -> Result<String, String> {
    p.create()?;
    refresh_script(p)?;
    #[allow(clippy::disallowed_methods)]
    // `pinch channels whatsapp install` runs npm in the owner's terminal
    let st = std::process::Command::new(npm)
        .args([
            "install",
            "--omit=dev",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
        ])
        .current_dir(&p.bridge)
        .status()
        .map_err(|e| format!("cannot run {npm}: {e}; install Node.js 20 or later with npm"))?;
    if !st.success() {
        return Err(format!("npm install failed ({st}); see its output above"));
    }
    installed(p)?;
    Ok(format!(
        "installed Baileys {BAILEYS} and the bridge in {}",
        p.bridge.display()
    ))
}
