//! The README stays true: its example configuration parses and validates, and its commands exist.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

const README: &str = include_str!("../../../../README.md");

#[test]
fn readme_configuration_is_valid() {
    let start = README.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + README[start..].find("```").expect("end of the toml block");
    let config = postern_config::Config::from_toml(&README[start..end], "README.md").unwrap();
    config.validate().unwrap();
    assert!(config.targets.contains_key("demo"));
}

#[test]
fn readme_starts_with_the_two_commands() {
    let first_lines: Vec<&str> = README.lines().take(12).collect();
    assert!(first_lines.contains(&"    cargo run -p postern -- quickstart"));
    assert!(first_lines.contains(&"    cargo test --workspace"));
    let ci = include_str!("../../../../.ci/run");
    assert!(ci.contains("cargo test --workspace"));
}

#[test]
fn readme_policy_example_validates_against_the_schema() {
    let start = README.find("```cedar\n").expect("a cedar block") + "```cedar\n".len();
    let end = start + README[start..].find("```").expect("end of the cedar block");
    let source = postern_policy::cedar::PolicySource {
        origin: "README.md".to_owned(),
        text: README[start..end].to_owned(),
    };
    let engine =
        postern_policy::cedar::PolicyEngine::load(&[source], &std::collections::BTreeMap::new())
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(engine.origin_of("engineers-office-hours").is_some());
}
