use super::*;

const EXAMPLE: &str = r#"
[listen]
address = "127.0.0.1:6432"
allow_plaintext_loopback = true

[issuers.dev]
issuer = "http://127.0.0.1:9000"
audience = ["postern"]
jwks = { uri = "http://127.0.0.1:9000/jwks.json" }

[targets.demo]
host = "127.0.0.1"
port = 5432
database = "demo"
admin = { user = "postern_admin", password = { env = "DEMO_ADMIN_PASSWORD" } }

[[targets.demo.roles]]
roles = ["reader"]
groups = ["analysts"]
"#;

#[test]
fn example_parses_and_validates() {
    let config = Config::from_toml(EXAMPLE, "example").unwrap();
    config.validate().unwrap();
    assert_eq!(config.targets["demo"].mode, UpstreamMode::RoleLogin);
    assert_eq!(
        config.issuers["dev"].jwks,
        JwksSource::Uri("http://127.0.0.1:9000/jwks.json".into())
    );
}

#[test]
fn unknown_keys_are_refused() {
    let text = EXAMPLE.replace("port = 5432", "port = 5432\nprot = 1");
    let err = Config::from_toml(&text, "example").unwrap_err().to_string();
    assert!(err.contains("prot"), "{err}");
}

#[test]
fn every_problem_is_reported() {
    let text = EXAMPLE
        .replace("allow_plaintext_loopback = true", "")
        .replace(
            "audience = [\"postern\"]",
            "audience = []\nalgorithms = [\"none\", \"HS256\"]",
        )
        .replace("groups = [\"analysts\"]", "");
    let config = Config::from_toml(&text, "example").unwrap();
    let ConfigError::Invalid(problems) = config.validate().unwrap_err() else {
        panic!()
    };
    let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"listen.tls"), "{keys:?}");
    assert!(keys.contains(&"issuers.dev.audience"), "{keys:?}");
    assert_eq!(
        keys.iter()
            .filter(|k| **k == "issuers.dev.algorithms")
            .count(),
        2,
        "{keys:?}"
    );
    assert!(keys.contains(&"targets.demo.roles[0]"), "{keys:?}");
}

/// The problems of the example with `extra` lines in its demo target.
fn ephemeral_problems(extra: &str) -> Vec<String> {
    let text = EXAMPLE.replace("port = 5432", &format!("port = 5432\n{extra}"));
    let config = Config::from_toml(&text, "example").unwrap();
    match config.validate() {
        Ok(()) => Vec::new(),
        Err(ConfigError::Invalid(problems)) => problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect(),
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn ephemeral_user_mode_has_defaults() {
    let text = EXAMPLE.replace("port = 5432", "port = 5432\nmode = \"ephemeral_user\"");
    let config = Config::from_toml(&text, "example").unwrap();
    config.validate().unwrap();
    let target = &config.targets["demo"];
    assert_eq!(target.mode, UpstreamMode::EphemeralUser);
    assert_eq!(target.ephemeral, None);
    let defaults = EphemeralConfig::default();
    assert_eq!(defaults.name_prefix, "pst_");
    assert_eq!(defaults.on_owned_objects, OnOwnedObjects::Drop);

    let text = format!(
        "{text}\n[targets.demo.ephemeral]\non_owned_objects = \"reassign\"\nname_prefix = \"pg1_\"\n"
    );
    let config = Config::from_toml(&text, "example").unwrap();
    config.validate().unwrap();
    let ephemeral = config.targets["demo"].ephemeral.clone().unwrap();
    assert_eq!(ephemeral.on_owned_objects, OnOwnedObjects::Reassign);
    assert_eq!(ephemeral.name_prefix, "pg1_");
}

#[test]
fn ephemeral_name_prefixes_are_checked() {
    for (prefix, problem) in [
        ("", Some("must not be empty")),
        ("p_345678901234567890x", Some("at most 20 bytes")),
        ("1pst_", Some("must start with")),
        ("Pst_", Some("must start with")),
        ("pst-", Some("must start with")),
        ("pst é", Some("must start with")),
        ("pg_", Some("reserves")),
        ("_", None),
        ("p_345678901234567890", None),
        ("postern_", None),
    ] {
        let problems = ephemeral_problems(&format!(
            "mode = \"ephemeral_user\"\nephemeral = {{ name_prefix = {prefix:?} }}"
        ));
        match problem {
            Some(needle) => assert!(
                problems.len() == 1
                    && problems[0].starts_with("targets.demo.ephemeral.name_prefix: ")
                    && problems[0].contains(needle),
                "{prefix:?}: {problems:?}"
            ),
            None => assert!(problems.is_empty(), "{prefix:?}: {problems:?}"),
        }
    }
}

#[test]
fn ephemeral_settings_outside_ephemeral_mode_are_reported() {
    let problems = ephemeral_problems("ephemeral = { on_owned_objects = \"drop\" }");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("targets.demo.ephemeral: "),
        "{problems:?}"
    );
    let text = EXAMPLE.replace(
        "port = 5432",
        "port = 5432\nmode = \"ephemeral_user\"\nephemeral = { on_owned_objects = \"keep\" }",
    );
    let error = Config::from_toml(&text, "example").unwrap_err().to_string();
    assert!(error.contains("keep"), "{error}");
}

#[test]
fn ephemeral_targets_on_one_server_need_their_own_prefixes() {
    let second = |prefix: &str| {
        format!(
            "{EXAMPLE}\n[targets.other]\nhost = \"127.0.0.1\"\nport = 5432\ndatabase = \"other\"\n\
             mode = \"ephemeral_user\"\n{prefix}\
             admin = {{ user = \"postern_admin\" }}\n\
             [[targets.other.roles]]\nroles = [\"reader\"]\ngroups = [\"analysts\"]\n"
        )
        .replace(
            "port = 5432\ndatabase = \"demo\"",
            "port = 5432\ndatabase = \"demo\"\nmode = \"ephemeral_user\"",
        )
    };
    let config = Config::from_toml(&second(""), "example").unwrap();
    let ConfigError::Invalid(problems) = config.validate().unwrap_err() else {
        panic!()
    };
    let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["targets.other.ephemeral.name_prefix"],
        "{problems:?}"
    );

    let config = Config::from_toml(
        &second("ephemeral = { name_prefix = \"pst_other_\" }\n"),
        "example",
    )
    .unwrap();
    config.validate().unwrap();
}

/// Tokens of the issuer named `postern` are believed about what exchange carried over (the
/// identity's kind and workload), so no configured issuer may take that name, token exchange on
/// or off.
#[test]
fn no_issuer_may_take_postern_s_own_name() {
    let text = EXAMPLE.replace("[issuers.dev]", "[issuers.postern]");
    let config = Config::from_toml(&text, "example").unwrap();
    assert!(config.token_exchange.is_none());
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("issuers.postern"), "{error}");
    assert!(error.contains("Postern's own issuer"), "{error}");
}

#[test]
fn transaction_pooling_needs_a_shared_login() {
    assert!(ephemeral_problems("pool = { mode = \"transaction\" }").is_empty());
    let problems =
        ephemeral_problems("mode = \"ephemeral_user\"\npool = { mode = \"transaction\" }");
    assert!(
        problems.len() == 1
            && problems[0].starts_with("targets.demo.pool.mode: ")
            && problems[0].contains("shared upstream login"),
        "{problems:?}"
    );
}

#[test]
fn serving_threads_default_to_half_the_cores_and_can_be_set() {
    let config = Config::from_toml(EXAMPLE, "example").unwrap();
    assert_eq!(config.listen.serving_threads(1), 1);
    assert_eq!(config.listen.serving_threads(2), 1);
    assert_eq!(config.listen.serving_threads(16), 8);

    let text = EXAMPLE.replace(
        "allow_plaintext_loopback = true",
        "allow_plaintext_loopback = true\nworker_threads = 3",
    );
    let config = Config::from_toml(&text, "example").unwrap();
    config.validate().unwrap();
    assert_eq!(config.listen.serving_threads(2), 3);

    for bad in ["0", "100000"] {
        let text = EXAMPLE.replace(
            "allow_plaintext_loopback = true",
            &format!("allow_plaintext_loopback = true\nworker_threads = {bad}"),
        );
        let config = Config::from_toml(&text, "example").unwrap();
        let ConfigError::Invalid(problems) = config.validate().unwrap_err() else {
            panic!("worker_threads = {bad} was accepted")
        };
        assert_eq!(problems[0].key, "listen.worker_threads", "{problems:?}");
        assert!(problems[0].message.contains("between 1 and 1024"));
    }
}
