//! A throwaway PostgreSQL cluster: real `initdb` and `pg_ctl` in a temporary directory, on a free
//! loopback port, stopped and removed on drop. Used by `postern quickstart` and by every
//! integration test that needs a database.
//!
//! Configured for speed, not durability (`fsync`, `synchronous_commit` and `full_page_writes`
//! off), listening on `127.0.0.1` only. The superuser `postgres` gets a random password at
//! `initdb`; TCP connections authenticate with SCRAM-SHA-256, the Unix socket in the cluster
//! directory (reachable only by the cluster's owner) with `trust`. With [`ClusterOptions::tls`],
//! a throwaway CA and a server certificate for `localhost`/`127.0.0.1` are generated and `ssl` is
//! on (`host` lines in `pg_hba.conf` match TLS and plaintext alike).
//!
//! The server runs as an unprivileged account when this process is root (see `server_user`).
//!
//! # Layout of the cluster directory
//! - `data/`: the data directory.
//! - `postgres.log`: the server's log; its last lines are part of every start error.
//! - `tls/`: `ca.crt`, `server.crt`, `server.key`, when TLS is on.
//! - `.s.PGSQL.<port>`: the Unix socket. Its path must stay under the platform limit of about 100
//!   bytes, so a caller-chosen directory should have a short path.
//!
//! Not owned here: roles, databases and settings a test needs (run them with [`PgCluster::psql`]).

mod binaries;
mod server_user;
#[cfg(test)]
mod tests;
mod tls;

use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use base64::Engine as _;
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

pub use self::binaries::find_pg_bin;
use self::server_user::ServerUser;

/// The superuser `initdb` creates.
const SUPERUSER: &str = "postgres";

/// The only address the server listens on.
const HOST: &str = "127.0.0.1";

/// Starts tried with a fresh port when the previous one was taken between choosing and binding.
const START_ATTEMPTS: u32 = 5;

/// How long `initdb` may take (it runs the bootstrap backend; seconds on a slow CI machine).
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);

/// How long `pg_ctl start -w` and `pg_ctl stop -w` wait for the server (their `-t`).
const PG_CTL_WAIT: Duration = Duration::from_secs(60);

/// How long a [`PgCluster::psql`] call may run, connection included.
const PSQL_TIMEOUT: Duration = Duration::from_secs(120);

/// How long `psql` waits for the connection itself (`PGCONNECT_TIMEOUT`, seconds).
const PSQL_CONNECT_TIMEOUT_SECS: &str = "10";

/// Lines of the server log quoted in a start error.
const LOG_TAIL_LINES: usize = 30;

/// Random bytes in the superuser password (base64url, so it never needs quoting).
const PASSWORD_BYTES: usize = 24;

/// Prefix of the temporary directories, so a leaked one is recognisable.
const TEMP_DIR_PREFIX: &str = "postern-pg-";

/// Why a cluster could not be started, queried or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "the PostgreSQL program `{name}` was not found (looked in PATH, in `pg_config --bindir` \
         and in /usr/lib/postgresql/*/bin). Install PostgreSQL — Debian/Ubuntu: \
         `apt-get install -y postgresql`; Fedora: `dnf install postgresql-server`; macOS: \
         `brew install postgresql@16` — or put its bin directory on PATH"
    )]
    BinariesMissing { name: String },
    #[error(
        "running as root, and neither a `postgres` nor a `nobody` account exists to run \
         PostgreSQL, which refuses to run as root; create one (`useradd --system postgres`) or run \
         as an ordinary user"
    )]
    NoUnprivilegedAccount,
    #[error(
        "running as root, and neither `runuser` nor `setpriv` was found to run PostgreSQL as \
         `{account}`; install util-linux or run as an ordinary user"
    )]
    NoUserSwitch { account: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("`{program}` did not finish within {timeout:?}")]
    Timeout { program: String, timeout: Duration },
    #[error("`{program}` failed ({status}): {}{}", .stderr.trim_end(), log_section(.log_tail.as_deref()))]
    Failed {
        program: String,
        status: ExitStatus,
        stderr: String,
        /// The last lines of the server log, when the server was involved.
        log_tail: Option<String>,
    },
    #[error("cannot generate TLS certificates: {0}")]
    Tls(#[from] rcgen::Error),
    #[error("cannot generate a random password")]
    Random,
}

fn log_section(tail: Option<&str>) -> String {
    match tail {
        Some(tail) if !tail.trim().is_empty() => format!("\nlast lines of the server log:\n{tail}"),
        _ => String::new(),
    }
}

impl ClusterError {
    /// Whether a failed start was the port being taken by someone else.
    fn is_address_in_use(&self) -> bool {
        matches!(self, Self::Failed { log_tail: Some(tail), .. } if tail.contains("Address already in use"))
    }
}

/// How to start a [`PgCluster`].
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Where the cluster lives. `None`: a new temporary directory, removed on drop. `Some`: created
    /// if absent, must not already hold a cluster, and is kept after the cluster stops.
    pub dir: Option<PathBuf>,
    /// Generate a CA and a server certificate and turn `ssl` on.
    pub tls: bool,
    /// `pg_hba.conf` lines placed before the defaults, so they take precedence.
    pub extra_hba: Vec<String>,
}

/// A running throwaway PostgreSQL cluster. Stopped (`-m immediate`) and removed on drop; use
/// [`PgCluster::stop`] to stop it cleanly and see errors.
pub struct PgCluster {
    /// Everything the cluster owns lives here; it is also the Unix socket directory.
    root: PathBuf,
    /// Present when `root` is a directory we created: dropping it removes the cluster's files.
    temp: Option<TempDir>,
    /// `root/data`, the data directory.
    data_dir: PathBuf,
    /// The server log, quoted in start errors.
    log_file: PathBuf,
    port: u16,
    password: String,
    /// The CA clients verify the server with, when TLS is on.
    ca_certificate: Option<PathBuf>,
    binaries: Binaries,
    /// Who runs `initdb` and `pg_ctl`; also needed by `Drop`.
    server_user: ServerUser,
    /// A server may be running, so `Drop` must stop it.
    running: bool,
}

/// The programs a cluster uses, from one installation.
#[derive(Debug, Clone)]
struct Binaries {
    initdb: PathBuf,
    pg_ctl: PathBuf,
    psql: PathBuf,
}

impl Binaries {
    /// Finds `initdb`, then takes `pg_ctl` and `psql` from the same directory when they are
    /// there, so client and server versions match. Blocking.
    fn find() -> Result<Self, ClusterError> {
        let initdb = find_pg_bin("initdb")?;
        let sibling = |name: &str| {
            initdb
                .parent()
                .map(|dir| dir.join(name))
                .filter(|p| p.is_file())
                .map_or_else(|| find_pg_bin(name), Ok)
        };
        Ok(Self {
            pg_ctl: sibling("pg_ctl")?,
            psql: sibling("psql")?,
            initdb,
        })
    }
}

impl PgCluster {
    /// Creates and starts a cluster, returning once it accepts connections.
    ///
    /// # Errors
    /// [`ClusterError::BinariesMissing`] without PostgreSQL; otherwise whatever step failed, with
    /// the program's stderr and the last lines of the server log.
    pub async fn start(options: ClusterOptions) -> Result<Self, ClusterError> {
        let ClusterOptions {
            dir,
            tls,
            extra_hba,
        } = options;
        let mut cluster = blocking(move || Self::prepare(dir, tls, &extra_hba)).await?;
        cluster.initdb().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            cluster.port = free_port()?;
            cluster.write_config()?;
            match cluster.pg_ctl_start().await {
                Ok(()) => {
                    tracing::debug!(port = cluster.port, dir = %cluster.root.display(), "PostgreSQL sandbox started");
                    return Ok(cluster);
                }
                Err(error) if attempt < START_ATTEMPTS && error.is_address_in_use() => {
                    tracing::debug!(
                        port = cluster.port,
                        attempt,
                        "port taken; retrying on another"
                    );
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// `"127.0.0.1"`: the server listens on loopback only.
    #[must_use]
    pub fn host(&self) -> &str {
        HOST
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's name, `postgres`.
    #[must_use]
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The superuser's password, random per cluster; TCP logins check it with SCRAM-SHA-256.
    #[must_use]
    pub fn superuser_password(&self) -> &str {
        &self.password
    }

    /// The CA certificate (PEM) that signed the server certificate, when started with TLS.
    #[must_use]
    pub fn ca_certificate_path(&self) -> Option<&Path> {
        self.ca_certificate.as_deref()
    }

    /// The cluster directory (also the Unix socket directory).
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The server log.
    #[must_use]
    pub fn log_path(&self) -> &Path {
        &self.log_file
    }

    /// A libpq key/value connection string for tokio-postgres or psql:
    /// `host=127.0.0.1 port=… user=… password=… dbname=…`, values quoted where needed.
    #[must_use]
    pub fn connection_string(&self, user: &str, password: &str, dbname: &str) -> String {
        let mut conninfo = self.conninfo(user, dbname);
        let _ = write!(conninfo, " password={}", conninfo_value(password));
        conninfo
    }

    /// Runs `sql` (one or more statements) as the superuser with the `psql` program, over TCP
    /// with SCRAM (and TLS verified against the sandbox CA when TLS is on). The password travels
    /// in `PGPASSWORD`, never on the command line; the SQL on stdin. Flags:
    /// `-X -q -At -v ON_ERROR_STOP=1`. Returns stdout.
    ///
    /// # Errors
    /// [`ClusterError::Failed`] with psql's stderr when any statement fails.
    pub async fn psql(&self, dbname: &str, sql: &str) -> Result<String, ClusterError> {
        let mut conninfo = self.conninfo(SUPERUSER, dbname);
        if let Some(ca) = &self.ca_certificate {
            let _ = write!(
                conninfo,
                " sslmode=verify-full sslrootcert={}",
                conninfo_value(&ca.to_string_lossy())
            );
        }
        let mut command = std::process::Command::new(&self.binaries.psql);
        command
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-f", "-", "-d"])
            .arg(conninfo)
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", PSQL_CONNECT_TIMEOUT_SECS)
            .env("PGAPPNAME", "postern-sandbox");
        // Settings that would override the connection string or add to it.
        for var in [
            "PGSERVICE",
            "PGSERVICEFILE",
            "PGOPTIONS",
            "PGPASSFILE",
            "PGSSLMODE",
            "PGSSLROOTCERT",
            "PGSSLCERT",
            "PGSSLKEY",
            "PGTARGETSESSIONATTRS",
        ] {
            command.env_remove(var);
        }
        let output = run_with_input(command, "psql", sql.as_bytes(), PSQL_TIMEOUT).await?;
        if output.status.success() {
            String::from_utf8(output.stdout).map_err(|e| ClusterError::Io {
                action: "psql printed something that is not UTF-8 for",
                path: self.root.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            })
        } else {
            Err(ClusterError::Failed {
                program: "psql".to_owned(),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                log_tail: None,
            })
        }
    }

    /// Stops the server (`pg_ctl stop -m fast`) and removes the directory unless the caller gave
    /// it.
    ///
    /// # Errors
    /// If `pg_ctl stop` fails (the drop then still tries `-m immediate`) or the directory cannot be
    /// removed.
    pub async fn stop(mut self) -> Result<(), ClusterError> {
        let command = self.pg_ctl(&["stop", "-m", "fast"]);
        let output = run(command, "pg_ctl stop", PG_CTL_WAIT + Duration::from_secs(5)).await?;
        if !output.status.success() {
            return Err(self.failed("pg_ctl stop", &output));
        }
        self.running = false;
        if let Some(temp) = self.temp.take() {
            let path = temp.path().to_path_buf();
            blocking(move || {
                temp.close().map_err(|source| ClusterError::Io {
                    action: "cannot remove the cluster directory",
                    path,
                    source,
                })
            })
            .await?;
        }
        Ok(())
    }

    /// Creates the directory, writes the password file, certificates and `pg_hba.conf` source.
    /// Blocking. From here on `Drop` cleans up whatever exists.
    fn prepare(
        dir: Option<PathBuf>,
        tls: bool,
        extra_hba: &[String],
    ) -> Result<Self, ClusterError> {
        let binaries = Binaries::find()?;
        let server_user = ServerUser::detect()?;
        let (root, temp) = match dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir).map_err(|source| ClusterError::Io {
                    action: "cannot create the cluster directory",
                    path: dir.clone(),
                    source,
                })?;
                let dir = std::fs::canonicalize(&dir).map_err(|source| ClusterError::Io {
                    action: "cannot resolve the cluster directory",
                    path: dir.clone(),
                    source,
                })?;
                (dir, None)
            }
            None => {
                let base = std::env::temp_dir();
                let temp = tempfile::Builder::new()
                    .prefix(TEMP_DIR_PREFIX)
                    .tempdir_in(&base)
                    .map_err(|source| ClusterError::Io {
                        action: "cannot create a temporary directory in",
                        path: base,
                        source,
                    })?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        set_mode(&root, 0o700)?;
        server_user.make_reachable(&root)?;
        server_user.own(&root)?;

        let mut cluster = Self {
            data_dir: root.join("data"),
            log_file: root.join("postgres.log"),
            root,
            temp,
            port: 0,
            password: random_password()?,
            ca_certificate: None,
            binaries,
            server_user,
            running: false,
        };
        if tls {
            let tls_dir = cluster.root.join("tls");
            std::fs::create_dir_all(&tls_dir).map_err(|source| ClusterError::Io {
                action: "cannot create",
                path: tls_dir.clone(),
                source,
            })?;
            cluster.server_user.own(&tls_dir)?;
            let files = tls::generate(&tls_dir, &cluster.server_user)?;
            cluster.ca_certificate = Some(files.ca_certificate);
        }
        cluster.write_file("pg_hba.conf.postern", &hba_conf(extra_hba), 0o600)?;
        Ok(cluster)
    }

    /// Runs `initdb` with the random superuser password, then installs `pg_hba.conf`.
    async fn initdb(&mut self) -> Result<(), ClusterError> {
        let pwfile = self.root.join("pwfile");
        self.write_file("pwfile", &format!("{}\n", self.password), 0o600)?;
        let mut command = self.server_user.command(&self.binaries.initdb);
        command
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()));
        let result = run(self.server_command(command), "initdb", INITDB_TIMEOUT).await;
        // The password must not outlive initdb on disk.
        let _ = std::fs::remove_file(&pwfile);
        let output = result?;
        if !output.status.success() {
            return Err(ClusterError::Failed {
                program: "initdb".to_owned(),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                log_tail: None,
            });
        }
        let hba_source = self.root.join("pg_hba.conf.postern");
        let hba = self.data_dir.join("pg_hba.conf");
        std::fs::rename(&hba_source, &hba).map_err(|source| ClusterError::Io {
            action: "cannot install",
            path: hba,
            source,
        })?;
        let conf = self.data_dir.join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(|source| ClusterError::Io {
                action: "cannot open",
                path: conf.clone(),
                source,
            })?;
        io::Write::write_all(
            &mut file,
            b"\n# Added by postern-sandbox: the settings of this throwaway cluster.\ninclude 'postern.conf'\n",
        )
        .map_err(|source| ClusterError::Io {
            action: "cannot write",
            path: conf,
            source,
        })
    }

    /// Writes `data/postern.conf` for the current port.
    fn write_config(&self) -> Result<(), ClusterError> {
        let mut conf = format!(
            "# Written by postern-sandbox for a throwaway cluster: speed over durability.\n\
             listen_addresses = '{HOST}'\n\
             port = {port}\n\
             unix_socket_directories = {socket_dir}\n\
             max_connections = 200\n\
             shared_buffers = 32MB\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             password_encryption = 'scram-sha-256'\n\
             log_destination = 'stderr'\n\
             logging_collector = off\n\
             lc_messages = 'C'\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n",
            port = self.port,
            socket_dir = conf_string(&self.root.to_string_lossy()),
        );
        if let Some(tls_dir) = self.ca_certificate.as_deref().and_then(Path::parent) {
            let _ = write!(
                conf,
                "ssl = on\nssl_cert_file = {}\nssl_key_file = {}\n",
                conf_string(&tls_dir.join("server.crt").to_string_lossy()),
                conf_string(&tls_dir.join("server.key").to_string_lossy()),
            );
        }
        self.write_file("data/postern.conf", &conf, 0o600)
    }

    /// `pg_ctl start -w`: returns when the server accepts connections or has failed.
    async fn pg_ctl_start(&mut self) -> Result<(), ClusterError> {
        // A fresh log per attempt, so the error quotes this attempt only.
        let _ = std::fs::remove_file(&self.log_file);
        let mut command = self.pg_ctl(&["start"]);
        command.arg("-l").arg(&self.log_file);
        self.running = true;
        let output = run(
            command,
            "pg_ctl start",
            PG_CTL_WAIT + Duration::from_secs(5),
        )
        .await?;
        if output.status.success() {
            return Ok(());
        }
        let error = self.failed("pg_ctl start", &output);
        // A server that came up after pg_ctl gave up would otherwise hold the port.
        let _ = run(
            self.pg_ctl(&["stop", "-m", "immediate"]),
            "pg_ctl stop",
            PG_CTL_WAIT,
        )
        .await;
        Err(error)
    }

    /// A `pg_ctl` command on this cluster that waits (`-w`) up to [`PG_CTL_WAIT`].
    fn pg_ctl(&self, args: &[&str]) -> std::process::Command {
        let mut command = self.server_user.command(&self.binaries.pg_ctl);
        command
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t"])
            .arg(PG_CTL_WAIT.as_secs().to_string())
            .args(args);
        self.server_command(command)
    }

    /// Settings shared by every server program invocation.
    fn server_command(&self, mut command: std::process::Command) -> std::process::Command {
        command
            .current_dir(&self.root)
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST");
        command
    }

    fn failed(&self, program: &str, output: &std::process::Output) -> ClusterError {
        ClusterError::Failed {
            program: program.to_owned(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            log_tail: Some(log_tail(&self.log_file)),
        }
    }

    /// Writes a file under the cluster directory, owned by the server account.
    fn write_file(&self, relative: &str, contents: &str, mode: u32) -> Result<(), ClusterError> {
        let path = self.root.join(relative);
        std::fs::write(&path, contents).map_err(|source| ClusterError::Io {
            action: "cannot write",
            path: path.clone(),
            source,
        })?;
        set_mode(&path, mode)?;
        self.server_user.own(&path)
    }

    /// `host=… port=… user=… dbname=…` without the password.
    fn conninfo(&self, user: &str, dbname: &str) -> String {
        format!(
            "host={HOST} port={} user={} dbname={}",
            self.port,
            conninfo_value(user),
            conninfo_value(dbname)
        )
    }
}

impl std::fmt::Debug for PgCluster {
    /// Everything but the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("root", &self.root)
            .field("port", &self.port)
            .field("tls", &self.ca_certificate.is_some())
            .field("server_user", &self.server_user)
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

impl Drop for PgCluster {
    /// Stops the server at once (`pg_ctl stop -m immediate`, synchronously, best effort); the
    /// temporary directory, if ours, is removed right after.
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let result = self
            .pg_ctl(&["stop", "-m", "immediate"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !result.is_ok_and(|status| status.success()) {
            tracing::warn!(dir = %self.root.display(), "could not stop the sandbox PostgreSQL cleanly");
        }
    }
}

/// The libpq quoting of a connection string value: bare when it has no space, quote or
/// backslash; else single-quoted with `\` escapes.
fn conninfo_value(value: &str) -> String {
    if !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\')
    {
        return value.to_owned();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}

/// A `postgresql.conf` string literal.
fn conf_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

fn hba_conf(extra: &[String]) -> String {
    let mut conf = String::from("# Written by postern-sandbox.\n# Lines given by the caller:\n");
    for line in extra {
        conf.push_str(line);
        conf.push('\n');
    }
    conf.push_str(
        "# Defaults: the socket is reachable only by the cluster's owner; TCP needs a password.\n\
         local all all trust\n\
         host all all 127.0.0.1/32 scram-sha-256\n\
         host all all ::1/128 scram-sha-256\n",
    );
    conf
}

fn random_password() -> Result<String, ClusterError> {
    let mut bytes = [0u8; PASSWORD_BYTES];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ClusterError::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A port nobody listens on right now: bind `127.0.0.1:0` and let go. Another process may take it
/// before the server binds; `start` retries then.
fn free_port() -> Result<u16, ClusterError> {
    let io_error = |source| ClusterError::Io {
        action: "cannot find a free port on",
        path: PathBuf::from(HOST),
        source,
    };
    let listener = std::net::TcpListener::bind((HOST, 0)).map_err(io_error)?;
    Ok(listener.local_addr().map_err(io_error)?.port())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ClusterError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        ClusterError::Io {
            action: "cannot set permissions of",
            path: path.to_path_buf(),
            source,
        }
    })
}

/// The last [`LOG_TAIL_LINES`] lines of the server log, or why it cannot be read.
fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Runs blocking setup work off the reactor.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ClusterError> + Send + 'static,
) -> Result<T, ClusterError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ClusterError::Spawn {
            program: "setup task".to_owned(),
            source: io::Error::other(e),
        })?
}

/// Runs a command to completion with nothing on stdin, capturing its output, within `timeout`.
async fn run(
    command: std::process::Command,
    program: &str,
    timeout: Duration,
) -> Result<std::process::Output, ClusterError> {
    run_with_input(command, program, &[], timeout).await
}

/// Runs a command to completion with `input` on stdin, capturing its output, within `timeout`
/// (killed when it runs over).
async fn run_with_input(
    command: std::process::Command,
    program: &str,
    input: &[u8],
    timeout: Duration,
) -> Result<std::process::Output, ClusterError> {
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let spawn_error = |source| ClusterError::Spawn {
        program: program.to_owned(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    let mut stdin = child.stdin.take();
    let feed = async move {
        if let Some(stdin) = stdin.as_mut() {
            // A program that exits without reading all of its input is reported by its status.
            let _ = stdin.write_all(input).await;
        }
        drop(stdin);
    };
    let work = async {
        let ((), output) = tokio::join!(feed, child.wait_with_output());
        output
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(output) => output.map_err(spawn_error),
        Err(_) => Err(ClusterError::Timeout {
            program: program.to_owned(),
            timeout,
        }),
    }
}
