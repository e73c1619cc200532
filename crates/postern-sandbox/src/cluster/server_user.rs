//! Who runs the server programs (`initdb`, `pg_ctl`, `postgres`).
//!
//! PostgreSQL refuses to run as root, and tests and CI often run as root. So when the effective
//! uid is 0 the server programs run as an unprivileged account — `postgres` if it exists, else
//! `nobody` — through `runuser` (util-linux) or, failing that, `setpriv`, and the cluster's files
//! are handed to that account. Otherwise they run as the caller. Client programs (`psql`) always
//! run as the caller.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::ClusterError;
use super::binaries::find_in_path;

/// Accounts tried, in order, when running as root.
const UNPRIVILEGED_ACCOUNTS: [&str; 2] = ["postgres", "nobody"];

/// How the server programs are started.
#[derive(Debug, Clone)]
pub(crate) enum ServerUser {
    /// Not root: run them directly.
    Caller,
    /// Root: switch to an unprivileged account first.
    Switch {
        name: String,
        uid: u32,
        gid: u32,
        via: Switcher,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum Switcher {
    /// `runuser -u NAME -- program …`
    Runuser(PathBuf),
    /// `setpriv --reuid UID --regid GID --clear-groups -- program …`
    Setpriv(PathBuf),
}

impl ServerUser {
    /// Decides how to run the server programs for this process. Blocking (runs `id`).
    pub(crate) fn detect() -> Result<Self, ClusterError> {
        let euid = effective_uid().map_err(|source| ClusterError::Io {
            action: "cannot determine the effective user of this process",
            path: std::env::temp_dir(),
            source,
        })?;
        if euid != 0 {
            return Ok(Self::Caller);
        }
        let Some((name, uid, gid)) = UNPRIVILEGED_ACCOUNTS
            .iter()
            .find_map(|name| lookup_account(name).map(|(uid, gid)| ((*name).to_owned(), uid, gid)))
        else {
            return Err(ClusterError::NoUnprivilegedAccount);
        };
        let via = if let Some(runuser) = find_in_path("runuser") {
            Switcher::Runuser(runuser)
        } else if let Some(setpriv) = find_in_path("setpriv") {
            Switcher::Setpriv(setpriv)
        } else {
            return Err(ClusterError::NoUserSwitch { account: name });
        };
        Ok(Self::Switch {
            name,
            uid,
            gid,
            via,
        })
    }

    /// A command that runs `program` as this user.
    pub(crate) fn command(&self, program: &Path) -> Command {
        match self {
            Self::Caller => Command::new(program),
            Self::Switch {
                name,
                via: Switcher::Runuser(runuser),
                ..
            } => {
                let mut command = Command::new(runuser);
                command.args(["-u", name, "--"]).arg(program);
                command
            }
            Self::Switch {
                uid,
                gid,
                via: Switcher::Setpriv(setpriv),
                ..
            } => {
                let mut command = Command::new(setpriv);
                command
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .args(["--clear-groups", "--"])
                    .arg(program);
                command
            }
        }
    }

    /// Hands `path` to this user (a no-op for the caller).
    pub(crate) fn own(&self, path: &Path) -> Result<(), ClusterError> {
        match self {
            Self::Caller => Ok(()),
            Self::Switch { uid, gid, .. } => std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
                .map_err(|source| ClusterError::Io {
                    action: "cannot hand over to the server account",
                    path: path.to_path_buf(),
                    source,
                }),
        }
    }

    /// Makes every ancestor of `dir` searchable by others (`o+x`, never `o+r`), so the server
    /// account can reach it. A no-op for the caller.
    pub(crate) fn make_reachable(&self, dir: &Path) -> Result<(), ClusterError> {
        if matches!(self, Self::Caller) {
            return Ok(());
        }
        for ancestor in dir.ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() {
                continue;
            }
            let io_error = |source| ClusterError::Io {
                action: "cannot make searchable for the server account",
                path: ancestor.to_path_buf(),
                source,
            };
            let mode = std::fs::metadata(ancestor)
                .map_err(io_error)?
                .permissions()
                .mode();
            if mode & 0o001 == 0 {
                tracing::debug!(dir = %ancestor.display(), "adding o+x so the PostgreSQL account can reach the cluster");
                std::fs::set_permissions(ancestor, std::fs::Permissions::from_mode(mode | 0o001))
                    .map_err(io_error)?;
            }
        }
        Ok(())
    }
}

/// The effective uid, as the owner of a file this process creates (no `unsafe` needed).
fn effective_uid() -> io::Result<u32> {
    Ok(tempfile::tempfile()?.metadata()?.uid())
}

/// `(uid, gid)` of an account, via `id` so every name service is consulted. `None` if unknown or
/// if it is root itself.
fn lookup_account(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let output = Command::new("id")
            .args([flag, name])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        String::from_utf8(output.stdout).ok()?.trim().parse().ok()
    };
    let uid = id("-u")?;
    (uid != 0).then_some((uid, id("-g")?))
}
