//! Role rules from the configuration (`[[targets.X.roles]]`) as Cedar `assume` policies, so that
//! role mapping and statement policy are one policy set: a deployment can `forbid` a role
//! outside office hours in its own files, and `postern policy explain` shows both.
//!
//! A rule becomes one permit, `@id("role-rule-<target>-<n>")` with `n` its index in the target's
//! list (as in `targets.<target>.roles[n]`). Its conditions mean what `roles::authorize_role`
//! checks: any of the groups, any of the subjects, any of the issuers (by configured name), and
//! every claim equal to the given string. A rule without conditions matches nobody (the
//! configuration refuses it too), so it generates no policy.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use postern_config::RoleRule;

use super::load::PolicySource;

/// The Cedar policy text for each rule that has conditions, and the roles each target's rules
/// name (the candidates for "roles you may use").
pub(crate) fn role_rule_sources(
    targets: &BTreeMap<String, Vec<RoleRule>>,
) -> (Vec<PolicySource>, BTreeMap<String, Vec<String>>) {
    let mut sources = Vec::new();
    let mut candidates = BTreeMap::new();
    for (target, rules) in targets {
        let mut roles = BTreeSet::new();
        for (n, rule) in rules.iter().enumerate() {
            roles.extend(rule.roles.iter().cloned());
            if let Some(text) = rule_policy(target, n, rule) {
                sources.push(PolicySource {
                    origin: format!("targets.{target}.roles[{n}]"),
                    text,
                });
            }
        }
        candidates.insert(target.clone(), roles.into_iter().collect());
    }
    (sources, candidates)
}

fn rule_policy(target: &str, n: usize, rule: &RoleRule) -> Option<String> {
    let unconditional = rule.groups.is_empty()
        && rule.subjects.is_empty()
        && rule.issuers.is_empty()
        && rule.claims.is_empty();
    if unconditional || rule.roles.is_empty() {
        return None;
    }
    let mut conditions = Vec::new();
    conditions.push(any_of(&rule.roles, |role| {
        format!("resource == Role::{}", literal(&format!("{target}/{role}")))
    }));
    if !rule.groups.is_empty() {
        conditions.push(any_of(&rule.groups, |group| {
            format!("principal in Group::{}", literal(group))
        }));
    }
    if !rule.subjects.is_empty() {
        conditions.push(any_of(&rule.subjects, |subject| {
            format!("principal.subject == {}", literal(subject))
        }));
    }
    if !rule.issuers.is_empty() {
        conditions.push(any_of(&rule.issuers, |issuer| {
            format!("principal.issuer == {}", literal(issuer))
        }));
    }
    for (claim, value) in &rule.claims {
        let claim = literal(claim);
        conditions.push(format!(
            "(principal.hasTag({claim}) && principal.getTag({claim}) == {})",
            literal(value)
        ));
    }
    let mut text = String::new();
    let _ = writeln!(
        text,
        "@id({})\npermit (principal, action == Action::\"assume\", resource)\nwhen {{\n  {}\n}};",
        literal(&format!("role-rule-{target}-{n}")),
        conditions.join("\n  && ")
    );
    Some(text)
}

fn any_of(values: &[String], condition: impl Fn(&str) -> String) -> String {
    let alternatives: Vec<String> = values.iter().map(|v| condition(v)).collect();
    format!("({})", alternatives.join(" || "))
}

/// A Cedar string literal. Rust's `escape_default` writes only escapes Cedar reads the same way
/// (`\t \r \n \' \" \\ \u{..}`), so any configured value stays one literal.
fn literal(value: &str) -> String {
    format!("\"{}\"", value.escape_default())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use postern_config::RoleRule;

    use super::{literal, role_rule_sources};

    #[test]
    fn rules_become_assume_permits() {
        let rule = RoleRule {
            roles: vec!["reader".into(), "writer".into()],
            groups: vec!["analysts".into()],
            subjects: vec![],
            issuers: vec!["corp".into()],
            claims: BTreeMap::from([("tenant_id".into(), "acme".into())]),
        };
        let open = RoleRule {
            roles: vec!["admin".into()],
            groups: vec![],
            subjects: vec![],
            issuers: vec![],
            claims: BTreeMap::new(),
        };
        let targets = BTreeMap::from([("demo".to_owned(), vec![rule, open])]);
        let (sources, candidates) = role_rule_sources(&targets);
        assert_eq!(sources.len(), 1);
        assert_eq!(sources[0].origin, "targets.demo.roles[0]");
        assert_eq!(
            sources[0].text,
            "@id(\"role-rule-demo-0\")\n\
             permit (principal, action == Action::\"assume\", resource)\n\
             when {\n  \
             (resource == Role::\"demo/reader\" || resource == Role::\"demo/writer\")\n  \
             && (principal in Group::\"analysts\")\n  \
             && (principal.issuer == \"corp\")\n  \
             && (principal.hasTag(\"tenant_id\") && principal.getTag(\"tenant_id\") == \"acme\")\n\
             };\n"
        );
        assert_eq!(candidates["demo"], ["admin", "reader", "writer"]);
    }

    #[test]
    fn literals_cannot_break_out() {
        assert_eq!(literal("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
        assert_eq!(literal("é"), "\"\\u{e9}\"");
    }
}
