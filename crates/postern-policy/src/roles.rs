//! Role mapping: which database roles a verified identity may assume on a target.
//!
//! The rules come from the target's configuration; the union of every rule that matches the
//! identity is what it may use. Pure: no I/O, so it is tested without a database.

use postern_config::RoleRule;
use postern_identity::Identity;

/// The roles `identity` may assume under `rules`, sorted and without duplicates.
pub fn allowed_roles(identity: &Identity, rules: &[RoleRule]) -> Vec<String> {
    let mut roles: Vec<String> = rules
        .iter()
        .filter(|rule| rule_matches(identity, rule))
        .flat_map(|rule| rule.roles.iter().cloned())
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

/// Why a requested role was refused, worded for the person who asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleRefusal {
    #[error(
        "{subject} may not assume role \"{requested}\" on target \"{target}\"; roles you may use: {}",
        allowed.join(", ")
    )]
    NotAllowed {
        subject: String,
        requested: String,
        target: String,
        allowed: Vec<String>,
    },
    #[error(
        "{subject} may not assume any role on target \"{target}\"; ask an administrator to add \
         you to a group that has access"
    )]
    NoRoles { subject: String, target: String },
    #[error(
        "{subject} may not assume role \"{requested}\" on target \"{target}\": denied by policy \
         \"{policy}\""
    )]
    Denied {
        subject: String,
        requested: String,
        target: String,
        policy: String,
    },
}

/// Decides whether `identity` may assume `requested` on `target`.
pub fn authorize_role(
    identity: &Identity,
    target: &str,
    requested: &str,
    rules: &[RoleRule],
) -> Result<(), RoleRefusal> {
    let allowed = allowed_roles(identity, rules);
    if allowed.iter().any(|role| role == requested) {
        return Ok(());
    }
    if allowed.is_empty() {
        return Err(RoleRefusal::NoRoles {
            subject: identity.subject.clone(),
            target: target.to_owned(),
        });
    }
    Err(RoleRefusal::NotAllowed {
        subject: identity.subject.clone(),
        requested: requested.to_owned(),
        target: target.to_owned(),
        allowed,
    })
}

fn rule_matches(identity: &Identity, rule: &RoleRule) -> bool {
    let any_of = |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
    let unconditional = rule.groups.is_empty()
        && rule.subjects.is_empty()
        && rule.issuers.is_empty()
        && rule.claims.is_empty();
    // A rule without conditions is refused by validation; refuse it here too, closed by default.
    if unconditional {
        return false;
    }
    let groups_ok =
        rule.groups.is_empty() || rule.groups.iter().any(|g| identity.groups.contains(g));
    let claims_ok = rule.claims.iter().all(|(name, expected)| {
        identity.claims.get(name).and_then(|v| v.as_str()) == Some(expected.as_str())
    });
    groups_ok
        && claims_ok
        && any_of(&rule.subjects, &identity.subject)
        && any_of(&rule.issuers, &identity.issuer_name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    fn identity(subject: &str, groups: &[&str]) -> Identity {
        let mut claims = serde_json::Map::new();
        claims.insert("tenant_id".into(), "t1".into());
        Identity {
            issuer_name: "corp".into(),
            issuer: "https://id.example.com".into(),
            subject: subject.into(),
            kind: postern_identity::IdentityKind::Human,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            claims,
            expires_at: SystemTime::now(),
            issued_at: None,
            token_id: None,
            mfa: false,
            workload: None,
        }
    }

    fn rule(roles: &[&str], groups: &[&str]) -> RoleRule {
        RoleRule {
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            subjects: vec![],
            issuers: vec![],
            claims: BTreeMap::new(),
        }
    }

    #[test]
    fn union_of_matching_rules() {
        let rules = [
            rule(&["reader"], &["analysts"]),
            rule(&["writer"], &["engineers"]),
        ];
        let alice = identity("alice@example.com", &["analysts"]);
        assert_eq!(allowed_roles(&alice, &rules), vec!["reader"]);
        assert!(authorize_role(&alice, "demo", "reader", &rules).is_ok());
        let refusal = authorize_role(&alice, "demo", "writer", &rules).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "alice@example.com may not assume role \"writer\" on target \"demo\"; roles you may \
             use: reader"
        );
        let both = identity("bob@example.com", &["analysts", "engineers"]);
        assert_eq!(allowed_roles(&both, &rules), vec!["reader", "writer"]);
    }

    #[test]
    fn every_condition_must_hold() {
        let mut r = rule(&["tenant"], &["analysts"]);
        r.claims.insert("tenant_id".into(), "t2".into());
        assert!(allowed_roles(&identity("a", &["analysts"]), &[r.clone()]).is_empty());
        r.claims.insert("tenant_id".into(), "t1".into());
        assert_eq!(
            allowed_roles(&identity("a", &["analysts"]), &[r.clone()]),
            vec!["tenant"]
        );
        r.issuers = vec!["other".into()];
        assert!(allowed_roles(&identity("a", &["analysts"]), &[r]).is_empty());
    }

    #[test]
    fn rule_without_conditions_matches_nobody() {
        let open = rule(&["reader"], &[]);
        assert!(matches!(
            authorize_role(&identity("a", &[]), "demo", "reader", &[open]),
            Err(RoleRefusal::NoRoles { .. })
        ));
    }
}
