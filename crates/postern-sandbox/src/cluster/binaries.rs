//! Finding the PostgreSQL programs: `PATH`, then `pg_config --bindir`, then the versioned
//! directories distributions and Homebrew install into (highest version first).
//!
//! Synchronous (it may run `pg_config`): call it off the reactor.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::ClusterError;

/// Versioned install locations: `(parent, directory name prefix before the version, subdirectory
/// holding the programs)`.
const VERSIONED_DIRS: [(&str, &str, &str); 4] = [
    // Debian and Ubuntu: /usr/lib/postgresql/15/bin
    ("/usr/lib/postgresql", "", "bin"),
    // PGDG RPMs: /usr/pgsql-16/bin
    ("/usr", "pgsql-", "bin"),
    // Homebrew on Apple silicon and on Intel: /opt/homebrew/opt/postgresql@16/bin
    ("/opt/homebrew/opt", "postgresql@", "bin"),
    ("/usr/local/opt", "postgresql@", "bin"),
];

/// Finds the PostgreSQL program `name` (`initdb`, `pg_ctl`, `psql`, …): on `PATH`, then in
/// `pg_config --bindir`, then in `/usr/lib/postgresql/*/bin` and similar versioned directories,
/// highest version first.
///
/// # Errors
/// [`ClusterError::BinariesMissing`], whose message says how to install PostgreSQL.
pub fn find_pg_bin(name: &str) -> Result<PathBuf, ClusterError> {
    if let Some(found) = find_in_path(name) {
        return Ok(found);
    }
    if let Some(found) = pg_config_bindir()
        .map(|dir| dir.join(name))
        .filter(|p| is_executable(p))
    {
        return Ok(found);
    }
    versioned_dirs()
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| ClusterError::BinariesMissing {
            name: name.to_owned(),
        })
}

/// The first executable called `name` in a directory of `PATH`.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn pg_config_bindir() -> Option<PathBuf> {
    let pg_config = find_in_path("pg_config")?;
    let output = std::process::Command::new(pg_config)
        .arg("--bindir")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    Some(PathBuf::from(dir.trim()))
}

/// Every versioned program directory that exists, highest version first.
fn versioned_dirs() -> Vec<PathBuf> {
    let mut found: Vec<(Vec<u32>, PathBuf)> = Vec::new();
    for (parent, prefix, sub) in VERSIONED_DIRS {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(version) = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(parse_version)
            else {
                continue;
            };
            found.push((version, entry.path().join(sub)));
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.into_iter().map(|(_, dir)| dir).collect()
}

/// `"16"` → `[16]`, `"9.6"` → `[9, 6]`; anything else is not a version.
fn parse_version(text: &str) -> Option<Vec<u32>> {
    text.split('.').map(|part| part.parse().ok()).collect()
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        assert_eq!(parse_version("16"), Some(vec![16]));
        assert_eq!(parse_version("9.6"), Some(vec![9, 6]));
        assert_eq!(parse_version("16beta1"), None);
        assert_eq!(parse_version(""), None);
        assert!(parse_version("10") > parse_version("9.6"));
    }

    #[test]
    fn finds_initdb_and_explains_how_to_install_what_is_missing() {
        let initdb = find_pg_bin("initdb").unwrap();
        assert!(initdb.ends_with("initdb"), "{}", initdb.display());

        let error = find_pg_bin("postern-no-such-program").unwrap_err();
        let message = error.to_string();
        for hint in [
            "apt-get install -y postgresql",
            "dnf install postgresql-server",
            "brew install postgresql@16",
        ] {
            assert!(message.contains(hint), "{message}");
        }
    }
}
