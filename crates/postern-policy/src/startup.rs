//! The startup-parameter allow list: which settings a client's `StartupMessage` may carry upstream.
//!
//! Startup parameters other than `user`, `database`, `options` and `replication` are settings
//! that PostgreSQL applies before the first statement, out of the guard's sight; `options` is a
//! command line (`-c name=value`, `--name=value`) that can set any of them, the role and
//! `session_authorization` included. So Postern passes on only ordinary session settings it can
//! live with, checks their values where a value matters (`client_encoding`,
//! `standard_conforming_strings`), refuses everything else by name, and refuses replication
//! connections. Setting names compare case-insensitively, as PostgreSQL's do; the four special
//! keys compare exactly, as in `ProcessStartupPacket` (`src/backend/tcop/backend_startup.c`).
//! Pure: no I/O.

use std::collections::HashSet;

use postern_sql::is_ascii_safe_encoding;

use crate::guard::{Refusal, RefusalReason, truncate};

/// Settings a client may pass at startup, lower-cased. Anything else is refused.
const ALLOWED_SETTINGS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "intervalstyle",
    "extra_float_digits",
    "search_path",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "bytea_output",
    "geqo",
    "jit",
    "standard_conforming_strings",
];

/// The prefix of protocol extension options (`_pq_.name`), which PostgreSQL answers with
/// `NegotiateProtocolVersion` when it does not know them.
const PROTOCOL_OPTION_PREFIX: &str = "_pq_.";

/// What a client's startup parameters amount to, once checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartupCheck {
    /// The `user` parameter: the database role the client asks for (who it *is* comes from its
    /// token).
    pub user: Option<String>,
    /// The `database` parameter.
    pub database: Option<String>,
    /// Settings to pass upstream as startup parameters, in the order given: allowed parameters as
    /// written, then each setting from `options` as its own `(name, value)` pair with the name
    /// as PostgreSQL reads it (lower-cased, `-` as `_`).
    pub forwarded: Vec<(String, String)>,
    /// `_pq_.*` protocol options the client asked for, none of which Postern supports: the proxy
    /// lists them in its `NegotiateProtocolVersion` reply.
    pub protocol_options: Vec<String>,
}

/// Checks the key/value pairs of a `StartupMessage`, all of them, in order.
///
/// # Errors
///
/// A [`Refusal`] naming the first parameter that is repeated, not allowed, or has a value Postern
/// cannot accept, or saying that replication connections are not allowed.
pub fn check_startup_parameters(params: &[(String, String)]) -> Result<StartupCheck, Refusal> {
    let mut check = StartupCheck::default();
    let mut seen = HashSet::new();
    let mut settings = Vec::new();
    for (key, value) in params {
        if !seen.insert(key.to_lowercase()) {
            return Err(Refusal::new(
                RefusalReason::DuplicateStartupParameter,
                format!("startup parameter {} is given more than once", quoted(key)),
            ));
        }
        match key.as_str() {
            "user" => check.user = Some(value.clone()),
            "database" => check.database = Some(value.clone()),
            "replication" => {
                return Err(Refusal::new(
                    RefusalReason::Replication,
                    "replication connections are not allowed through Postern",
                ));
            }
            "options" => settings.extend(parse_options(value)?),
            _ if key.starts_with(PROTOCOL_OPTION_PREFIX) => {
                check.protocol_options.push(key.clone());
            }
            _ => {
                check_setting(key, value, "startup parameter")?;
                check.forwarded.push((key.clone(), value.clone()));
            }
        }
    }
    for (name, value) in settings {
        if !seen.insert(name.clone()) {
            return Err(Refusal::new(
                RefusalReason::DuplicateStartupParameter,
                format!(
                    "setting {} is given more than once in the startup parameters and options",
                    quoted(&name)
                ),
            ));
        }
        check_setting(&name, &value, "setting")?;
        check.forwarded.push((name, value));
    }
    Ok(check)
}

/// Checks one setting, from a startup parameter or from `options`, against the allow list.
fn check_setting(name: &str, value: &str, what: &str) -> Result<(), Refusal> {
    let lower = name.to_lowercase();
    let refuse = |why: &str| {
        Err(Refusal::new(
            RefusalReason::StartupParameter,
            format!("{what} {} is not allowed: {why}", quoted(name)),
        ))
    };
    match lower.as_str() {
        "role" => refuse("the role is chosen from your verified identity"),
        "session_authorization" => {
            refuse("the session's user is chosen from your verified identity")
        }
        _ if lower.starts_with("postern.") => {
            refuse("postern.* settings are set by Postern from your verified identity")
        }
        "client_encoding" if !is_ascii_safe_encoding(value) => refuse(&format!(
            "client encoding {} is not ASCII-safe, so Postern could misread statements in it; \
             use UTF8",
            quoted(value)
        )),
        "standard_conforming_strings" if !value.eq_ignore_ascii_case("on") => refuse(
            "Postern reads string literals as the server does only with \
             standard_conforming_strings on",
        ),
        _ if ALLOWED_SETTINGS.contains(&lower.as_str()) => Ok(()),
        _ => refuse(&format!(
            "Postern passes on only these session settings: {}",
            ALLOWED_SETTINGS.join(", ")
        )),
    }
}

/// The settings in libpq's `options` parameter: split as PostgreSQL's `pg_split_opts` does
/// (whitespace separates, a backslash makes the next character literal), then read as its
/// `process_postgres_switches` does, accepting only `-c name=value`, `-cname=value` and
/// `--name=value`. Names come back lower-cased with `-` read as `_` (`ParseLongOption`).
fn parse_options(options: &str) -> Result<Vec<(String, String)>, Refusal> {
    let words = split_options(options)?;
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let setting = if word == "-c" {
            words.next().ok_or_else(|| {
                options_refusal("\"-c\" at the end of the startup options has no setting after it")
            })?
        } else if let Some(setting) = word.strip_prefix("--") {
            setting.to_owned()
        } else if let Some(setting) = word.strip_prefix("-c") {
            setting.to_owned()
        } else {
            return Err(options_refusal(&format!(
                "startup option {} is not allowed: Postern accepts only settings \
                 (-c name=value or --name=value)",
                quoted(&word)
            )));
        };
        let Some((name, value)) = setting.split_once('=') else {
            return Err(options_refusal(&format!(
                "startup option setting {} has no value: write name=value",
                quoted(&setting)
            )));
        };
        settings.push((name.replace('-', "_").to_lowercase(), value.to_owned()));
    }
    Ok(settings)
}

/// Splits `options` into words like `pg_split_opts` (`src/backend/utils/init/postinit.c`).
fn split_options(options: &str) -> Result<Vec<String>, Refusal> {
    let mut words = Vec::new();
    let mut chars = options.chars();
    let mut word: Option<String> = None;
    while let Some(c) = chars.next() {
        if c.is_ascii_whitespace() || c == '\u{b}' {
            if let Some(done) = word.take() {
                words.push(done);
            }
            continue;
        }
        let literal = if c == '\\' {
            chars.next().ok_or_else(|| {
                options_refusal("the startup options end with a backslash that escapes nothing")
            })?
        } else {
            c
        };
        word.get_or_insert_with(String::new).push(literal);
    }
    words.extend(word);
    Ok(words)
}

fn options_refusal(message: &str) -> Refusal {
    Refusal::new(RefusalReason::StartupOptions, message)
}

/// `text` in double quotes, escaped and cut short, for messages.
fn quoted(text: &str) -> String {
    format!("{:?}", truncate(text, 64))
}

#[cfg(test)]
mod tests {
    use super::{StartupCheck, check_startup_parameters};
    use crate::guard::RefusalReason;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn pairs(forwarded: &[(String, String)]) -> Vec<(&str, &str)> {
        forwarded
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn typical_drivers_pass() {
        // What libpq/psql, pgjdbc and node-postgres send.
        let check = check_startup_parameters(&params(&[
            ("user", "alice"),
            ("database", "app"),
            ("application_name", "psql"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "Europe/Paris"),
            ("extra_float_digits", "3"),
            ("statement_timeout", "5s"),
            ("standard_conforming_strings", "on"),
            ("_pq_.command_tag", "1"),
        ]))
        .unwrap();
        assert_eq!(check.user.as_deref(), Some("alice"));
        assert_eq!(check.database.as_deref(), Some("app"));
        assert_eq!(
            pairs(&check.forwarded),
            [
                ("application_name", "psql"),
                ("client_encoding", "UTF8"),
                ("DateStyle", "ISO"),
                ("TimeZone", "Europe/Paris"),
                ("extra_float_digits", "3"),
                ("statement_timeout", "5s"),
                ("standard_conforming_strings", "on"),
            ]
        );
        assert_eq!(check.protocol_options, ["_pq_.command_tag"]);
        assert_eq!(
            check_startup_parameters(&[]).unwrap(),
            StartupCheck::default()
        );
    }

    #[test]
    fn setting_names_are_case_insensitive() {
        for key in [
            "datestyle",
            "DATESTYLE",
            "Search_Path",
            "JIT",
            "IntervalStyle",
        ] {
            assert!(
                check_startup_parameters(&params(&[(key, "x")])).is_ok(),
                "{key}"
            );
        }
    }

    #[test]
    fn options_settings_are_forwarded_separately() {
        let check = check_startup_parameters(&params(&[
            ("user", "alice"),
            (
                "options",
                "-c search_path=app,public -cstatement_timeout=5s --lock-timeout=1s \
                 -c application_name=my\\ app\\\\x  --DateStyle=ISO",
            ),
        ]))
        .unwrap();
        assert_eq!(
            pairs(&check.forwarded),
            [
                ("search_path", "app,public"),
                ("statement_timeout", "5s"),
                ("lock_timeout", "1s"),
                ("application_name", "my app\\x"),
                ("datestyle", "ISO"),
            ]
        );
        let check = check_startup_parameters(&params(&[("options", "   ")])).unwrap();
        assert!(check.forwarded.is_empty());
    }

    #[test]
    fn refused_parameters() {
        use RefusalReason as R;
        type Case<'a> = (&'a [(&'a str, &'a str)], R, &'a str);
        let cases: &[Case<'_>] = &[
            (
                &[("replication", "database")],
                R::Replication,
                "replication connections are not allowed through Postern",
            ),
            (&[("replication", "false")], R::Replication, ""),
            (
                &[("role", "admin")],
                R::StartupParameter,
                "startup parameter \"role\" is not allowed: the role is chosen from your verified identity",
            ),
            (
                &[("ROLE", "admin")],
                R::StartupParameter,
                "startup parameter \"ROLE\"",
            ),
            (
                &[("session_authorization", "admin")],
                R::StartupParameter,
                "",
            ),
            (
                &[("postern.claims", "{}")],
                R::StartupParameter,
                "postern.* settings",
            ),
            (&[("Postern.Claims", "{}")], R::StartupParameter, ""),
            (
                &[("client_encoding", "SJIS")],
                R::StartupParameter,
                "not ASCII-safe",
            ),
            (&[("client_encoding", "big5")], R::StartupParameter, ""),
            (
                &[("standard_conforming_strings", "off")],
                R::StartupParameter,
                "",
            ),
            (
                &[("standard_conforming_strings", "true")],
                R::StartupParameter,
                "",
            ),
            (
                &[("work_mem", "1GB")],
                R::StartupParameter,
                "startup parameter \"work_mem\" is not allowed",
            ),
            (&[("is_superuser", "on")], R::StartupParameter, ""),
            (&[("", "x")], R::StartupParameter, ""),
            (&[("User", "alice")], R::StartupParameter, ""),
            (
                &[("user", "a"), ("user", "b")],
                R::DuplicateStartupParameter,
                "startup parameter \"user\" is given more than once",
            ),
            (
                &[("DateStyle", "ISO"), ("datestyle", "SQL")],
                R::DuplicateStartupParameter,
                "",
            ),
            (
                &[
                    ("application_name", "a"),
                    ("options", "-c application_name=b"),
                ],
                R::DuplicateStartupParameter,
                "",
            ),
            (
                &[("options", "-c search_path=a --search-path=b")],
                R::DuplicateStartupParameter,
                "",
            ),
        ];
        for (given, reason, message) in cases {
            let refusal = check_startup_parameters(&params(given)).unwrap_err();
            assert_eq!(refusal.reason, *reason, "{given:?}");
            assert!(
                refusal.message.contains(message),
                "{given:?}: {}",
                refusal.message
            );
        }
    }

    #[test]
    fn hostile_options_are_refused() {
        use RefusalReason as R;
        let cases: &[(&str, R)] = &[
            ("-c role=admin", R::StartupParameter),
            ("-crole=admin", R::StartupParameter),
            ("--role=admin", R::StartupParameter),
            ("-c ROLE=admin", R::StartupParameter),
            ("-c session_authorization=admin", R::StartupParameter),
            ("--session-authorization=admin", R::StartupParameter),
            ("-c postern.claims={}", R::StartupParameter),
            ("--postern.claims={}", R::StartupParameter),
            ("-c search_path=x -c role=admin", R::StartupParameter),
            ("-c\\ role=admin", R::StartupParameter),
            ("-c standard_conforming_strings=off", R::StartupParameter),
            ("-c client_encoding=SJIS", R::StartupParameter),
            ("-c work_mem=1GB", R::StartupParameter),
            ("-c allow_system_table_mods=on", R::StartupParameter),
            ("-d 5", R::StartupOptions),
            ("-P", R::StartupOptions),
            ("-O", R::StartupOptions),
            ("-e", R::StartupOptions),
            ("-Oc role=admin", R::StartupOptions),
            ("role=admin", R::StartupOptions),
            ("-c", R::StartupOptions),
            ("-c search_path", R::StartupOptions),
            ("--search_path", R::StartupOptions),
            ("-c search_path=x \\", R::StartupOptions),
        ];
        for (options, reason) in cases {
            let refusal = check_startup_parameters(&params(&[("options", options)])).unwrap_err();
            assert_eq!(refusal.reason, *reason, "{options:?}: {}", refusal.message);
        }
        // A backslash-escaped space keeps "role=admin" inside the search_path value: harmless.
        let check = check_startup_parameters(&params(&[(
            "options",
            "-c search_path=a\\ -c\\ role=admin",
        )]))
        .unwrap();
        assert_eq!(
            pairs(&check.forwarded),
            [("search_path", "a -c role=admin")]
        );
    }
}
