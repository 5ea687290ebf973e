//! The one door to `std::process::Command::new` (`clippy.toml` disallows
//! it elsewhere): commands the host runs are built here, in the sandbox
//! crate, so a review of what the host starts reads one crate. Code in
//! other crates that legitimately runs a program carries a local
//! `#[allow(clippy::disallowed_methods)]` with its reason.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};

/// `std::process::Command::new(program)`.
#[allow(clippy::disallowed_methods)] // the helper clippy.toml routes every other call through
pub fn new(program: impl AsRef<OsStr>) -> Command {
    Command::new(program)
}

/// Runs `cmd` with `input` written to its stdin, and collects its output.
///
/// stdout and stderr are drained on their own threads while `input` is
/// written: a child that reports progress on stderr while it reads a large
/// stdin (`docker import` of an image) would otherwise fill the pipe and
/// wait for us while we wait for it.
pub fn output_with_input(cmd: &mut Command, input: &[u8]) -> std::io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let written = child.stdin.take().expect("piped").write_all(input);
    // stdin is closed here (dropped), so the child sees EOF.
    let status = child.wait()?;
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    // A child that exits early without reading everything fails the write
    // (EPIPE); its own status and stderr say more than that.
    if let Err(e) = written {
        if status.success() {
            return Err(e);
        }
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that writes more to stderr than a pipe holds before it reads
    /// its stdin, fed more than a pipe holds: finishes instead of deadlocking.
    #[test]
    fn a_chatty_child_fed_in_bulk_does_not_deadlock() {
        let input = vec![b'x'; 1 << 20];
        let mut c = new("/bin/sh");
        c.args([
            "-c",
            "head -c 262144 /dev/zero >&2; wc -c | tr -d ' '; echo done >&2",
        ]);
        let out = output_with_input(&mut c, &input).unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1048576");
        assert_eq!(out.stderr.len(), 262144 + 5);
    }
}
