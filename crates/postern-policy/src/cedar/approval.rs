//! What a permit's `@approval(...)` annotation asks for: who must approve, how many of them, how
//! long the grant lasts, and whether approvers see an impact preview.
//!
//! ```text
//! @approval("dbas")                                  one person from group dbas, grant 1h
//! @approval("group=dbas approvers=2 ttl=30m preview") two people, 30 minutes, with a preview
//! ```
//!
//! Checked when the policy set loads: a requirement Postern cannot read is a load error, never a
//! permit that silently needs nobody.

use std::fmt;
use std::time::Duration;

/// The grant's lifetime when the annotation does not say.
pub const DEFAULT_GRANT_TTL: Duration = Duration::from_secs(60 * 60);

/// The longest a grant may be given for: standing privileges are what approvals replace.
pub const MAX_GRANT_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The most distinct approvers a requirement may ask for.
pub const MAX_APPROVERS: u32 = 10;

/// A parsed `@approval` annotation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApprovalSpec {
    /// The group whose members may approve (their token's groups claim).
    pub group: String,
    /// How many different people from the group must approve.
    pub approvers: u32,
    /// How long the grant an approval creates lasts, at most (approvers may give less).
    pub grant_ttl: Duration,
    /// Whether approvers see an impact preview (the statement run and rolled back).
    pub preview: bool,
}

impl ApprovalSpec {
    /// Parses an annotation's value: a bare group name, or `key=value` words separated by spaces
    /// or commas (`group`, `approvers`, `ttl`) and the flag `preview`.
    ///
    /// # Errors
    ///
    /// A message naming what is wrong, for the policy load error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let words: Vec<&str> = text
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty())
            .collect();
        let mut group = None;
        let mut approvers = 1;
        let mut grant_ttl = DEFAULT_GRANT_TTL;
        let mut preview = false;
        for (index, word) in words.iter().enumerate() {
            match word.split_once('=') {
                None if *word == "preview" => preview = true,
                None if index == 0 => group = Some((*word).to_owned()),
                None => {
                    return Err(format!(
                        "@approval: \"{word}\" is not a setting (write group=…, approvers=…, \
                         ttl=… or preview)"
                    ));
                }
                Some(("group", value)) => group = Some(value.to_owned()),
                Some(("approvers", value)) => {
                    approvers = value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_APPROVERS).contains(n))
                        .ok_or_else(|| {
                            format!(
                                "@approval: approvers={value} must be a number from 1 to \
                                 {MAX_APPROVERS}"
                            )
                        })?;
                }
                Some(("ttl", value)) => {
                    grant_ttl = humantime::parse_duration(value)
                        .ok()
                        .filter(|d| *d >= Duration::from_secs(1) && *d <= MAX_GRANT_TTL)
                        .ok_or_else(|| {
                            format!(
                                "@approval: ttl={value} must be a duration from 1s to 7d \
                                 (such as 30m or 4h)"
                            )
                        })?;
                }
                Some((key, _)) => {
                    return Err(format!(
                        "@approval: unknown setting \"{key}\" (known: group, approvers, ttl, \
                         preview)"
                    ));
                }
            }
        }
        let group = group.filter(|g| valid_group(g)).ok_or_else(|| {
            "@approval needs the approver group: @approval(\"dbas\") or \
             @approval(\"group=dbas approvers=2\")"
                .to_owned()
        })?;
        Ok(Self {
            group,
            approvers,
            grant_ttl,
            preview,
        })
    }
}

/// Group names go into messages and webhook bodies: printable, no quotes or spaces.
fn valid_group(group: &str) -> bool {
    !group.is_empty()
        && group.len() <= 128
        && group
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@'))
}

impl fmt::Display for ApprovalSpec {
    /// How a requirement reads in messages: `1 approval from group "dbas"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let noun = if self.approvers == 1 {
            "approval"
        } else {
            "approvals by different people"
        };
        write!(f, "{} {noun} from group \"{}\"", self.approvers, self.group)
    }
}

#[cfg(test)]
mod tests {
    use super::{ApprovalSpec, DEFAULT_GRANT_TTL};
    use std::time::Duration;

    #[test]
    fn bare_group_and_settings() {
        let bare = ApprovalSpec::parse("dbas").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bare.group, "dbas");
        assert_eq!(bare.approvers, 1);
        assert_eq!(bare.grant_ttl, DEFAULT_GRANT_TTL);
        assert!(!bare.preview);
        let full = ApprovalSpec::parse("group=sre, approvers=2 ttl=30m preview")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(full.group, "sre");
        assert_eq!(full.approvers, 2);
        assert_eq!(full.grant_ttl, Duration::from_secs(1800));
        assert!(full.preview);
        assert_eq!(
            full.to_string(),
            "2 approvals by different people from group \"sre\""
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (text, expected) in [
            ("", "needs the approver group"),
            ("approvers=2", "needs the approver group"),
            ("dbas approvers=0", "from 1 to 10"),
            ("dbas approvers=many", "from 1 to 10"),
            ("dbas ttl=30y", "from 1s to 7d"),
            ("dbas colour=red", "unknown setting \"colour\""),
            ("dbas sre", "\"sre\" is not a setting"),
            ("group=\"db as\"", "is not a setting"),
            ("group=db\"x", "needs the approver group"),
        ] {
            let error = ApprovalSpec::parse(text).err().unwrap_or_default();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
