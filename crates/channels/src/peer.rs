//! Who is on the other end of a local socket (issue 14).
//!
//! The host's own sockets (`run/admin.sock`, `run/cli.sock`) are for the
//! owner's processes on this machine, never for an agent — even one that
//! learned a path it should not know. Each accepted connection is checked
//! by the kernel's account of the peer (`SO_PEERCRED`): the same uid as the
//! host (or root), and a process that lives in the host's own pid, network
//! and mount namespaces. A sandboxed runner (bubblewrap: new user, pid and
//! net namespaces; Docker: new pid, net and mount namespaces) fails the
//! namespace test whatever path it reaches the socket by.

use std::path::PathBuf;

/// Why a peer was refused (logged once per connection by the caller).
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("the kernel gave no credentials for the peer: {0}")]
    NoCredentials(std::io::Error),
    #[error("the peer runs as uid {peer}, not as the host's uid {host} or root")]
    OtherUser { peer: u32, host: u32 },
    #[error(
        "the peer (pid {pid}) is in another {ns} namespace than the host: a sandboxed process"
    )]
    OtherNamespace { pid: i32, ns: &'static str },
    #[error("cannot read {0} to tell where the peer runs: {1}")]
    Unknown(PathBuf, std::io::Error),
}

const NAMESPACES: [&str; 3] = ["pid", "net", "mnt"];

/// Checks a peer by the credentials the kernel recorded for it.
pub fn check(uid: u32, pid: Option<i32>) -> Result<(), PeerError> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if uid != me && uid != 0 {
        return Err(PeerError::OtherUser {
            peer: uid,
            host: me,
        });
    }
    let Some(pid) = pid.filter(|p| *p > 0) else {
        // A peer in a pid namespace the host cannot see reports pid 0.
        return Err(PeerError::OtherNamespace { pid: 0, ns: "pid" });
    };
    for ns in NAMESPACES {
        let mine = PathBuf::from(format!("/proc/self/ns/{ns}"));
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/{ns}"));
        let a = std::fs::read_link(&mine).map_err(|e| PeerError::Unknown(mine, e))?;
        let b = std::fs::read_link(&theirs).map_err(|e| PeerError::Unknown(theirs, e))?;
        if a != b {
            return Err(PeerError::OtherNamespace { pid, ns });
        }
    }
    Ok(())
}

/// [`check`] for an accepted tokio Unix stream.
pub fn check_stream(s: &tokio::net::UnixStream) -> Result<(), PeerError> {
    let c = s.peer_cred().map_err(PeerError::NoCredentials)?;
    check(c.uid(), c.pid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_itself_passes_and_others_do_not() {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        check(me, Some(std::process::id() as i32)).unwrap();
        assert!(matches!(
            check(me, None),
            Err(PeerError::OtherNamespace { .. })
        ));
        assert!(matches!(
            check(me, Some(0)),
            Err(PeerError::OtherNamespace { .. })
        ));
        if me == 0 {
            assert!(check(12345, Some(1)).is_err());
        } else {
            assert!(matches!(
                check(me + 1, Some(1)),
                Err(PeerError::OtherUser { .. })
            ));
        }
    }

    #[tokio::test]
    async fn a_socket_pair_in_one_process_is_the_host() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        check_stream(&a).unwrap();
    }
}
