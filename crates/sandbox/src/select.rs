//! Resolving the user's choice of sandbox into a working backend.

use crate::backend::{Choice, Sandbox};
use crate::bwrap::{find_bwrap, probe_bwrap, Bwrap, INSTALL_BWRAP};
use crate::limits::Limits;
use crate::process::Process;

/// Resolves the user's choice into a working backend, or says what to do.
/// Each runner's limits come with its [`RunnerSpec`]; the backend's own
/// (the defaults) apply to the commands tests build with `command_with`.
pub fn select(choice: Choice) -> Result<Box<dyn Sandbox>, String> {
    match choice {
        Choice::Process => Ok(Box::new(Process)),
        Choice::Docker => {
            let Some(docker) = crate::docker::find_docker() else {
                return Err("docker is not installed: install it (Debian/Ubuntu: `sudo apt-get install -y docker.io`), or use --sandbox bwrap".into());
            };
            crate::docker::probe(&docker)?;
            Ok(Box::new(crate::docker::Docker::new(
                docker,
                Limits::default(),
            )))
        }
        Choice::Bwrap | Choice::Auto => {
            let Some(bwrap) = find_bwrap() else {
                return Err(format!(
                    "bubblewrap (bwrap) is not installed: {INSTALL_BWRAP}"
                ));
            };
            probe_bwrap(&bwrap).map_err(|e| format!("bubblewrap does not work here ({e}): enable unprivileged user namespaces, or {INSTALL_BWRAP}"))?;
            Ok(Box::new(Bwrap::new(bwrap)))
        }
    }
}
