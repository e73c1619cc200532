//! `postern login` and `postern psql` as a person uses them, against a real stack's development
//! identity provider: the device flow completed on the provider's form, the browser flow driven
//! through the provider's sign-in form to the CLI's loopback callback, the token cache's
//! permissions, psql run with the token in its environment and never its arguments, a refresh
//! when the access token has expired (one, and only when needed), a refused refresh telling the
//! user to log in again, and the hint for policies that require MFA.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use postern_testkit::{Stack, StackOptions};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const POSTERN: &str = env!("CARGO_BIN_EXE_postern");
/// How long a step of the CLI may take before the test fails.
const WAIT: Duration = Duration::from_secs(60);

/// Reading `orders` needs a second factor; anything else is the demo's defaults.
const MFA_POLICY: &str = r#"
@id("orders-need-mfa")
forbid (principal, action in Action::"read", resource == Table::"public.orders")
unless { context.mfa };
"#;

async fn stack() -> Stack {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let stack = Stack::start(StackOptions {
        policies: vec![MFA_POLICY.to_owned()],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    stack.idp.set_device_poll_interval(Duration::from_secs(1));
    stack
}

/// The CLI as one user on one machine: a configuration directory of its own, and the stack's
/// provider found the way a quickstart's is (`--dir`).
struct User {
    config_home: tempfile::TempDir,
    dir: PathBuf,
    port: u16,
    /// Put in front of PATH (a fake psql).
    path_prefix: Option<PathBuf>,
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl User {
    fn new(stack: &Stack) -> Self {
        Self {
            config_home: tempfile::tempdir().unwrap(),
            dir: stack.dir().to_owned(),
            port: stack.addr.port(),
            path_prefix: None,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(POSTERN);
        command
            .args(args)
            .env("XDG_CONFIG_HOME", self.config_home.path())
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("PGSSLMODE")
            .env_remove("PGPASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(prefix) = &self.path_prefix {
            let path = std::env::var("PATH").unwrap_or_default();
            command.env("PATH", format!("{}:{path}", prefix.display()));
        }
        command
    }

    /// Starts `postern login ARGS --dir DIR`, its stderr read line by line.
    fn login(&self, args: &[&str]) -> Running {
        let mut all = vec!["login"];
        all.extend_from_slice(args);
        let mut command = self.command(&all);
        command.arg("--dir").arg(&self.dir);
        Running::spawn(command)
    }

    /// Runs `postern psql demo --role ROLE --port P --dir DIR -- PSQL_ARGS`.
    async fn psql(&self, role: &str, psql_args: &[&str]) -> Output {
        let port = self.port.to_string();
        let mut command = self.command(&["psql", "demo", "--role", role, "--port", &port]);
        command
            .arg("--dir")
            .arg(&self.dir)
            .arg("--")
            .args(psql_args);
        let output = tokio::time::timeout(WAIT, command.output())
            .await
            .expect("postern psql did not finish")
            .unwrap();
        Output {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn cache_path(&self) -> PathBuf {
        self.config_home.path().join("postern/tokens.json")
    }

    /// The one cached sign-in.
    fn cached(&self) -> Value {
        let cache: Value =
            serde_json::from_str(&std::fs::read_to_string(self.cache_path()).unwrap()).unwrap();
        assert_eq!(cache["sessions"].as_array().unwrap().len(), 1, "{cache}");
        cache["sessions"][0].clone()
    }

    /// Makes the cached access token look expired, as it would be an hour later.
    fn expire_cached_token(&self) {
        let mut cache: Value =
            serde_json::from_str(&std::fs::read_to_string(self.cache_path()).unwrap()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        cache["sessions"][0]["expires_at"] = Value::from(now - 10);
        std::fs::write(self.cache_path(), cache.to_string()).unwrap();
    }
}

/// A running `postern login`.
struct Running {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: String,
}

impl Running {
    fn spawn(mut command: Command) -> Self {
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (sender, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            stderr: String::new(),
        }
    }

    /// The first stderr line (from now) for which `find` gives something.
    async fn find<T>(&mut self, mut find: impl FnMut(&str) -> Option<T>) -> T {
        loop {
            let line = tokio::time::timeout(WAIT, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("postern login said nothing useful:\n{}", self.stderr))
                .unwrap_or_else(|| panic!("postern login ended:\n{}", self.stderr));
            self.stderr.push_str(&line);
            self.stderr.push('\n');
            if let Some(found) = find(&line) {
                return found;
            }
        }
    }

    async fn finish(mut self) -> Output {
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .await
            .unwrap();
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("postern login did not finish")
            .unwrap();
        while let Some(line) = self.lines.recv().await {
            self.stderr.push_str(&line);
            self.stderr.push('\n');
        }
        Output {
            status,
            stdout,
            stderr: self.stderr,
        }
    }
}

/// Enters `user_code` on the provider's device page as `subject` in `groups`, approving or
/// denying, as a person would with a browser.
async fn complete_device_form(
    stack: &Stack,
    verification_uri: &str,
    user_code: &str,
    subject: &str,
    decision: &str,
) {
    let http = reqwest::Client::new();
    let page = http
        .get(format!("{verification_uri}?user_code={user_code}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains(&format!("value=\"{user_code}\"")), "{page}");
    let answer = http
        .post(format!("{}/device", stack.idp.issuer()))
        .form(&[
            ("user_code", user_code),
            ("subject", subject),
            ("groups", "analysts"),
            ("decision", decision),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
}

/// Signs in with `postern login --device` as alice (analysts, no second factor).
async fn device_login(stack: &Stack, user: &User) -> Output {
    let mut login = user.login(&["--device"]);
    let verification_uri = login
        .find(|line| {
            line.strip_prefix("To sign in, open ")
                .and_then(|rest| rest.split(' ').next())
                .map(str::to_owned)
        })
        .await;
    let user_code = login
        .find(|line| {
            let code = line.trim();
            (code.len() == 9 && code.as_bytes()[4] == b'-').then(|| code.to_owned())
        })
        .await;
    complete_device_form(
        stack,
        &verification_uri,
        &user_code,
        "alice@example.com",
        "approve",
    )
    .await;
    login.finish().await
}

fn assert_private(path: &Path) {
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(path), 0o600, "{}", path.display());
    assert_eq!(mode(path.parent().unwrap()), 0o700);
}

#[tokio::test]
async fn device_login_then_psql_renewing_the_token_and_hinting_at_mfa() {
    let stack = stack().await;
    let user = User::new(&stack);

    let output = device_login(&stack, &user).await;
    assert!(output.status.success(), "{}", output.stderr);
    assert!(
        output.stderr.contains(&format!(
            "Logged in to {} as alice@example.com.",
            stack.idp.issuer()
        )),
        "{}",
        output.stderr
    );
    assert!(output.stdout.is_empty(), "{}", output.stdout);
    assert_private(&user.cache_path());
    let cached = user.cached();
    assert_eq!(cached["issuer"], stack.idp.issuer());
    assert_eq!(cached["client_id"], "postern-cli");
    for token in ["access_token", "refresh_token", "id_token"] {
        let token = cached[token].as_str().unwrap();
        assert!(!output.stderr.contains(token) && !output.stdout.contains(token));
    }

    let output = user
        .psql("reader", &["-X", "-At", "-c", "SELECT current_user"])
        .await;
    assert!(output.status.success(), "{}", output.stderr);
    assert_eq!(output.stdout.trim(), "reader");

    // The policy wants a second factor for orders: psql says permission denied, and postern
    // says what the token lacks and what to do.
    let output = user
        .psql(
            "reader",
            &["-X", "-At", "-c", "SELECT count(*) FROM orders"],
        )
        .await;
    assert_eq!(output.status.code(), Some(1), "{}", output.stderr);
    assert!(
        output
            .stderr
            .contains("permission denied by policy \"orders-need-mfa\""),
        "{}",
        output.stderr
    );
    assert!(
        output.stderr.contains(&format!(
            "your token says no second factor was used; if a policy requires MFA, log in again \
             with MFA (`postern login --dir {} --mfa`)",
            user.dir.display()
        )),
        "{}",
        output.stderr
    );
    // psql's own exit code comes through.
    let output = user.psql("reader", &["-X", "-c", "SELECT 1/0"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        !output.stderr.contains("second factor"),
        "{}",
        output.stderr
    );
    assert_eq!(
        stack.idp.refresh_requests(),
        0,
        "a valid token is not renewed"
    );

    // An hour later the access token has expired: it is renewed once, with the refresh token.
    let before = user.cached();
    user.expire_cached_token();
    let output = user
        .psql("reader", &["-X", "-At", "-c", "SELECT current_user"])
        .await;
    assert!(output.status.success(), "{}", output.stderr);
    assert_eq!(output.stdout.trim(), "reader");
    assert_eq!(stack.idp.refresh_requests(), 1);
    let after = user.cached();
    assert_ne!(after["access_token"], before["access_token"]);
    assert_ne!(after["refresh_token"], before["refresh_token"]);
    assert_private(&user.cache_path());
    let output = user.psql("reader", &["-X", "-At", "-c", "SELECT 1"]).await;
    assert!(output.status.success(), "{}", output.stderr);
    assert_eq!(
        stack.idp.refresh_requests(),
        1,
        "the renewed token is used as it is"
    );

    // The provider's session has ended: the refresh is refused and psql does not run.
    stack.idp.end_sessions();
    user.expire_cached_token();
    let output = user.psql("reader", &["-X", "-At", "-c", "SELECT 1"]).await;
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "{}", output.stdout);
    assert!(
        output.stderr.contains("could not be renewed")
            && output.stderr.contains("the refresh token has expired")
            && output.stderr.contains(&format!(
                "log in again with `postern login --dir {}`",
                user.dir.display()
            )),
        "{}",
        output.stderr
    );
    assert_eq!(stack.idp.refresh_requests(), 2);
    let output = user.psql("reader", &["-X", "-At", "-c", "SELECT 1"]).await;
    assert!(
        output.stderr.contains("no refresh token"),
        "{}",
        output.stderr
    );
    assert_eq!(
        stack.idp.refresh_requests(),
        2,
        "a refused refresh token is not tried again"
    );

    // Logging in again mends it; a denied sign-in says so and keeps the cache as it was.
    let output = device_login(&stack, &user).await;
    assert!(output.status.success(), "{}", output.stderr);
    let output = user
        .psql("reader", &["-X", "-At", "-c", "SELECT current_user"])
        .await;
    assert_eq!(output.stdout.trim(), "reader", "{}", output.stderr);
    let kept = user.cached();
    let mut login = user.login(&["--device"]);
    let uri = login
        .find(|line| {
            line.strip_prefix("To sign in, open ")
                .and_then(|rest| rest.split(' ').next())
                .map(str::to_owned)
        })
        .await;
    let code = login
        .find(|line| {
            let code = line.trim();
            (code.len() == 9 && code.as_bytes()[4] == b'-').then(|| code.to_owned())
        })
        .await;
    complete_device_form(&stack, &uri, &code, "alice@example.com", "deny").await;
    let output = login.finish().await;
    assert!(!output.status.success());
    assert!(
        output.stderr.contains("the sign-in was denied"),
        "{}",
        output.stderr
    );
    assert_eq!(user.cached(), kept);
}

#[tokio::test]
async fn browser_login_with_mfa_then_psql_gets_the_token_in_its_environment_only() {
    let stack = stack().await;
    let mut user = User::new(&stack);

    let mut login = user.login(&["--browser", "--no-open", "--mfa", "--print-token"]);
    let url = login
        .find(|line| {
            let line = line.trim();
            line.starts_with(&format!("{}/authorize?", stack.idp.issuer()))
                .then(|| line.to_owned())
        })
        .await;
    let parsed = reqwest::Url::parse(&url).unwrap();
    let query: std::collections::HashMap<String, String> =
        parsed.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], "postern-cli");
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["scope"], "openid offline_access");
    assert_eq!(query["prompt"], "login");
    assert!(query["redirect_uri"].starts_with("http://127.0.0.1:"));

    // The person's browser: the form (asking for MFA, its box ticked), then the sign-in, whose
    // redirect lands on the CLI's loopback callback.
    let http = reqwest::Client::new();
    let page = http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("value=\"1\" checked>"), "{page}");
    let mut form: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    form.extend([
        ("subject".to_owned(), "alice@example.com".to_owned()),
        ("groups".to_owned(), "analysts".to_owned()),
        ("mfa".to_owned(), "1".to_owned()),
    ]);
    let landed = http
        .post(format!("{}/authorize", stack.idp.issuer()))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(landed.status(), 200);
    assert!(landed.url().as_str().starts_with(&query["redirect_uri"]));
    assert!(
        landed
            .text()
            .await
            .unwrap()
            .contains("postern has your sign-in")
    );
    let output = login.finish().await;
    assert!(output.status.success(), "{}", output.stderr);
    assert!(
        output
            .stderr
            .contains("as alice@example.com with a second factor."),
        "{}",
        output.stderr
    );
    let cached = user.cached();
    let token = cached["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        output.stdout.trim(),
        token,
        "--print-token prints the access token"
    );
    assert!(!output.stderr.contains(&token));
    assert_private(&user.cache_path());

    // The MFA policy is satisfied.
    let output = user
        .psql(
            "reader",
            &["-X", "-At", "-c", "SELECT count(*) FROM orders"],
        )
        .await;
    assert!(output.status.success(), "{}", output.stderr);
    assert_eq!(output.stdout.trim(), "4");

    // psql's arguments and environment, as a fake psql on PATH records them.
    let fake = tempfile::tempdir().unwrap();
    let record = fake.path().join("record");
    let script = fake.path().join("psql");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{record}.args'\nenv > '{record}.env'\n\
             echo 'ERROR:  permission denied for table orders' >&2\nexit 3\n",
            record = record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    user.path_prefix = Some(fake.path().to_owned());
    let output = user.psql("reader", &["-c", "SELECT 1"]).await;
    assert_eq!(output.status.code(), Some(3), "{}", output.stderr);
    let args = std::fs::read_to_string(record.with_extension("args")).unwrap();
    assert_eq!(
        args,
        format!(
            "--dbname\nhost='127.0.0.1' port={} dbname='demo' user='reader' sslmode='prefer'\n-c\n\
             SELECT 1\n",
            user.port
        )
    );
    assert!(!args.contains(&token));
    let env = std::fs::read_to_string(record.with_extension("env")).unwrap();
    assert!(
        env.lines()
            .any(|line| line == format!("PGPASSWORD={token}"))
    );
    // psql's stderr reaches the user; a token with a second factor gets no MFA hint.
    assert!(output.stderr.contains("permission denied for table orders"));
    assert!(
        !output.stderr.contains("second factor"),
        "{}",
        output.stderr
    );
    user.path_prefix = None;

    // Logging out forgets the tokens.
    let mut logout = user.command(&["logout"]);
    logout.arg("--dir").arg(&user.dir);
    let output = logout.output().await.unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("Logged out of"));
    assert!(!user.cache_path().exists());
    let output = user.psql("reader", &["-c", "SELECT 1"]).await;
    assert!(!output.status.success());
    assert!(
        output.stderr.contains(&format!(
            "not logged in to {} (client postern-cli): run `postern login --dir {}`",
            stack.idp.issuer(),
            user.dir.display()
        )),
        "{}",
        output.stderr
    );
}
