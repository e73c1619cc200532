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
