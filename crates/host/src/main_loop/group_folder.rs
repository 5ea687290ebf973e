//! A group's folder: made when missing, its `AGENT.md` read (or the
//! default written) without following anything the agent planted there.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::paths::DataDir;

/// The instructions a new group starts with.
const DEFAULT_AGENT_MD: &str =
    "# Instructions\n\nYou are a helpful personal assistant. Answer briefly.\n";
/// Largest `AGENT.md` the host copies for a sandbox.
const MAX_AGENT_MD: u64 = 1 << 20;

/// Makes the group's folder, its `.home`, and its `AGENT.md` when missing,
/// and returns the folder and the instructions. The folder is the agent's
/// workspace, so everything beneath it is opened beneath the data dir's
/// descriptor with no symlink followed ([`crate::safe_fs`]): a link the
/// agent planted as `AGENT.md` or `.home` is never written through, it is
/// removed (and logged) and the default instructions take its place.
pub(super) fn ensure_group_folder(data: &DataDir, folder: &str) -> Result<(PathBuf, Vec<u8>)> {
    use crate::safe_fs::{Create, Dir, Error};
    use std::io::{Read, Write};
    let root = Dir::open_trusted(data.root())?;
    let g = root.create_dir_all(Path::new("groups").join(folder), 0o700)?;
    if let Err(e) = g.create_dir_all(".home", 0o700) {
        tracing::warn!(group = %folder, "the agent's home folder is unusable ({e}); its HOME may not be writable");
    }
    migrate_tools(data, &root, &g, folder);
    let write_default = |g: &Dir| -> Result<Vec<u8>> {
        let mut f = g.create_file("AGENT.md", Create::New, 0o600)?;
        f.write_all(DEFAULT_AGENT_MD.as_bytes()).with_context(|| {
            format!(
                "writing {}",
                data.group_dir(folder).join("AGENT.md").display()
            )
        })?;
        Ok(DEFAULT_AGENT_MD.as_bytes().to_vec())
    };
    let md = match g.open_file("AGENT.md") {
        Ok(f) => {
            let mut buf = Vec::new();
            f.take(MAX_AGENT_MD + 1)
                .read_to_end(&mut buf)
                .with_context(|| format!("reading {}", g.path().join("AGENT.md").display()))?;
            anyhow::ensure!(
                buf.len() as u64 <= MAX_AGENT_MD,
                "{} is larger than {MAX_AGENT_MD} bytes; shorten it",
                g.path().join("AGENT.md").display()
            );
            buf
        }
        Err(Error::Missing(_)) => write_default(&g)?,
        Err(e @ (Error::Symlink(_) | Error::NotRegular(_))) => {
            tracing::warn!(group = %folder, "{e}: removed it; the group starts again from the default instructions (something inside the sandbox replaced AGENT.md)");
            g.remove_file("AGENT.md")?;
            write_default(&g)?
        }
        Err(e) => return Err(e.into()),
    };
    Ok((data.group_dir(folder), md))
}

/// Before issue 14 approved packages lived in the workspace's `.tools`,
/// where the agent could replace the folder with a symlink; they now live
/// in the host-only `tools/<folder>/`. Moves an old real folder once (the
/// entry itself: nothing inside is followed) and says so.
fn migrate_tools(
    data: &DataDir,
    root: &crate::safe_fs::Dir,
    g: &crate::safe_fs::Dir,
    folder: &str,
) {
    let Ok(old) = g.dir(".tools") else { return };
    drop(old);
    let moved = root
        .create_dir_all("tools", 0o700)
        .and_then(|tools| match tools.dir(folder) {
            Ok(_) => Ok(false),
            Err(crate::safe_fs::Error::Missing(_)) => {
                g.rename(".tools", &tools, folder).map(|_| true)
            }
            Err(e) => Err(e),
        });
    match moved {
        Ok(true) => {
            tracing::info!(group = %folder, "moved approved packages from {} to {} (host-only)", g.path().join(".tools").display(), data.tools_dir(folder).display())
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(group = %folder, "could not move the old tools folder: {e}; approve the packages again")
        }
    }
}
