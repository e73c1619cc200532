//! Loading policies: generated role rules, the shipped defaults and the deployment's files are
//! parsed, given their `@id`s as Cedar policy ids, and validated against the schema in strict
//! mode. Every problem is collected, each with its file and line, so that an operator fixes them
//! all in one go and a reload with a typo keeps the old policies rather than running without.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use cedar_policy::{Effect, PolicyId, PolicySet, ValidationMode, Validator};
use miette::Diagnostic;

use super::engine::policy_id;
use super::schema::Vocabulary;

/// The text of one policy file and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// Where the text came from, for messages: the file's path as configured.
    pub origin: String,
    /// The Cedar policies.
    pub text: String,
}

/// How [`PolicyEngine::load_with`](super::PolicyEngine::load_with) builds the policy set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Add Postern's shipped statement policies (`policies/defaults.cedar`: connect, read,
    /// write, ddl, copy_in, copy_out for everyone). Off, a deployment is closed by default:
    /// nothing runs that its own files do not permit. `[policy] include_defaults` in the
    /// configuration.
    pub include_defaults: bool,
}

impl Default for LoadOptions {
    /// The defaults included, as `[policy] include_defaults` defaults to.
    fn default() -> Self {
        Self {
            include_defaults: true,
        }
    }
}

/// Where in a source a problem is: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text` (clamped to the text).
    #[must_use]
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One problem with the policies, located as precisely as Cedar allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    /// The source's origin (a file path, `targets.demo.roles[0]`, ...).
    pub origin: String,
    /// Where in the source; `None` when the problem is not about one place.
    pub location: Option<Location>,
    /// The policy's `@id`, when the problem is in one policy that has one.
    pub policy: Option<String>,
    /// What is wrong, and where Cedar can tell, what was probably meant.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some(location) => write!(f, "{}:{location}: {}", self.origin, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

/// Every problem found while loading policies, in the order of the sources. Loading fails if
/// there is any: a policy set with a broken policy in it is not half-loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors {
    /// The problems, at least one.
    pub errors: Vec<PolicyError>,
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Who wrote a source: the `@id` rules are the user's to follow, generated ids are Postern's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Author {
    Postern,
    User,
}

/// The longest `@id`: ids go into messages, audit events and metrics labels.
pub const MAX_POLICY_ID_LEN: usize = 128;

/// A loaded, validated policy set and what Postern keeps about each policy.
pub(crate) struct Loaded {
    pub(crate) policies: PolicySet,
    /// Load order, to name "the first" of several deciding policies deterministically.
    pub(crate) order: HashMap<String, usize>,
    /// `@approval` annotations of permit policies.
    pub(crate) approvals: HashMap<String, super::approval::ApprovalSpec>,
    /// Where each policy was written, for explanations.
    pub(crate) origins: HashMap<String, String>,
    /// Validator warnings (policies that can never apply, confusable identifiers, ...).
    pub(crate) warnings: Vec<PolicyError>,
}

pub(crate) fn load(
    vocabulary: &Vocabulary,
    sources: &[(Author, PolicySource)],
) -> Result<Loaded, PolicyErrors> {
    let mut errors = Vec::new();
    let mut loaded = Loaded {
        policies: PolicySet::new(),
        order: HashMap::new(),
        approvals: HashMap::new(),
        origins: HashMap::new(),
        warnings: Vec::new(),
    };
    // Which source each policy came from, to place validation errors.
    let mut source_of: HashMap<String, usize> = HashMap::new();
    for (index, (author, source)) in sources.iter().enumerate() {
        let error = |location: Option<Location>, policy: Option<&str>, message: String| {
            (
                index,
                PolicyError {
                    origin: source.origin.clone(),
                    location,
                    policy: policy.map(str::to_owned),
                    message,
                },
            )
        };
        let parsed = match PolicySet::from_str(&source.text) {
            Ok(parsed) => parsed,
            Err(parse_errors) => {
                for e in parse_errors.iter() {
                    let location = first_offset(e).map(|o| Location::of_offset(&source.text, o));
                    errors.push(error(location, None, describe(e)));
                }
                continue;
            }
        };
        let starts = policy_starts(&source.text);
        let location_of = |id: &PolicyId| {
            generated_index(id)
                .and_then(|i| starts.get(i))
                .map(|&offset| Location::of_offset(&source.text, offset))
        };
        for template in parsed.templates() {
            errors.push(error(
                location_of(template.id()),
                template.annotation("id"),
                "policy templates (with ?principal or ?resource) are not supported: name the \
                 principal and resource in the policy"
                    .to_owned(),
            ));
        }
        let mut policies: Vec<_> = parsed.policies().collect();
        policies.sort_by_key(|p| generated_index(p.id()));
        for policy in policies {
            let location = location_of(policy.id());
            let Some(id) = policy.annotation("id") else {
                errors.push(error(
                    location,
                    None,
                    "this policy has no @id(\"...\") annotation: every policy needs one, unique \
                     across all policy files, to be named in decisions and audit events"
                        .to_owned(),
                ));
                continue;
            };
            if *author == Author::User
                && let Err(why) = check_id(id)
            {
                errors.push(error(location, Some(id), why));
                continue;
            }
            if let Some(first) = loaded.origins.get(id) {
                errors.push(error(
                    location,
                    Some(id),
                    format!("policy id \"{id}\" is already used by the policy at {first}"),
                ));
                continue;
            }
            let approval = policy.annotation("approval");
            if policy.effect() == Effect::Forbid && approval.is_some() {
                errors.push(error(
                    location,
                    Some(id),
                    "@approval is for permit policies (allowed once approved); a forbid always \
                     denies"
                        .to_owned(),
                ));
                continue;
            }
            let approval = match approval.map(super::approval::ApprovalSpec::parse) {
                None => None,
                Some(Ok(spec)) => Some(spec),
                Some(Err(why)) => {
                    errors.push(error(location, Some(id), why));
                    continue;
                }
            };
            if let Err(e) = loaded.policies.add(policy.new_id(PolicyId::new(id))) {
                errors.push(error(location, Some(id), e.to_string()));
                continue;
            }
            loaded.order.insert(id.to_owned(), loaded.order.len());
            if let Some(spec) = approval {
                loaded.approvals.insert(id.to_owned(), spec);
            }
            let place = match location {
                Some(location) => format!("{}:{location}", source.origin),
                None => source.origin.clone(),
            };
            loaded.origins.insert(id.to_owned(), place);
            source_of.insert(id.to_owned(), index);
        }
    }

    let validator = Validator::new(vocabulary.schema.clone());
    let result = validator.validate(&loaded.policies, ValidationMode::Strict);
    let place = |id: &PolicyId, diagnostic: &dyn Diagnostic, message: String| {
        let index = source_of.get(policy_id(id)).copied();
        let source = index.map(|i| &sources[i].1);
        let error = PolicyError {
            origin: source.map_or_else(|| "(unknown)".to_owned(), |s| s.origin.clone()),
            location: source
                .zip(first_offset(diagnostic))
                .map(|(s, offset)| Location::of_offset(&s.text, offset)),
            policy: Some(policy_id(id).to_owned()),
            message,
        };
        (index.unwrap_or(usize::MAX), error)
    };
    for e in result.validation_errors() {
        let (index, error) = place(e.policy_id(), e, describe(e));
        // An expression the validator rejects for each principal type (`User`, `Service`) is
        // one mistake: report it once.
        let repeated = errors.iter().any(|(_, seen): &(usize, PolicyError)| {
            seen.origin == error.origin
                && seen.location == error.location
                && seen.policy == error.policy
        });
        if !repeated {
            errors.push((index, error));
        }
    }
    for w in result.validation_warnings() {
        loaded.warnings.push(place(w.policy_id(), w, describe(w)).1);
    }

    if errors.is_empty() {
        return Ok(loaded);
    }
    // By source, then by place: the order an operator fixes them in.
    errors.sort_by_key(|(index, error)| (*index, error.location));
    Err(PolicyErrors {
        errors: errors.into_iter().map(|(_, error)| error).collect(),
    })
}

/// An `@id` Postern accepts: short, printable, and plain enough to sit in a client message, an
/// audit event and a metrics label without quoting.
fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("@id(\"\") is empty: name the policy".to_owned());
    }
    if id.len() > MAX_POLICY_ID_LEN {
        return Err(format!(
            "@id is longer than {MAX_POLICY_ID_LEN} characters: use a shorter name"
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:/".contains(*c)))
    {
        return Err(format!(
            "@id(\"{}\") contains {c:?}: use letters, digits and - _ . : /",
            id.escape_default()
        ));
    }
    Ok(())
}

/// The message of a Cedar diagnostic, with its help ("did you mean ...?") when it has one.
fn describe(diagnostic: &(impl Diagnostic + ?Sized)) -> String {
    match diagnostic.help() {
        Some(help) => format!("{diagnostic}; {help}"),
        None => diagnostic.to_string(),
    }
}

/// The byte offset of a diagnostic's first label, in the text it was parsed from.
fn first_offset(diagnostic: &(impl Diagnostic + ?Sized)) -> Option<usize> {
    diagnostic.labels()?.map(|label| label.offset()).min()
}

/// Cedar names the policies of a parsed text `policy0`, `policy1`, ... in the order written.
fn generated_index(id: &PolicyId) -> Option<usize> {
    policy_id(id).strip_prefix("policy")?.parse().ok()
}

/// The byte offset where each policy of a text that parsed starts, in order: the first character
/// that is not blank or comment after the start or after the `;` ending the previous policy.
/// Cedar has only `//` comments, and `;` appears in a policy only at its end or inside a string,
/// so a scan that skips strings and comments finds them. (Cedar's API does not give a policy's
/// position, only those of the errors in it.)
fn policy_starts(text: &str) -> Vec<usize> {
    #[derive(PartialEq)]
    enum State {
        /// Between policies: blanks and comments until the next one starts.
        Between,
        Policy,
        String,
        Comment {
            in_policy: bool,
        },
    }
    let mut starts = Vec::new();
    let mut state = State::Between;
    let mut chars = text.char_indices().peekable();
    while let Some((offset, c)) = chars.next() {
        match state {
            State::Comment { in_policy } => {
                if c == '\n' {
                    state = if in_policy {
                        State::Policy
                    } else {
                        State::Between
                    };
                }
            }
            State::String => match c {
                '\\' => {
                    chars.next();
                }
                '"' => state = State::Policy,
                _ => {}
            },
            State::Between | State::Policy => {
                let in_policy = state == State::Policy;
                match c {
                    '/' if chars.peek().is_some_and(|&(_, next)| next == '/') => {
                        state = State::Comment { in_policy };
                    }
                    _ if c.is_whitespace() => {}
                    _ => {
                        if !in_policy {
                            starts.push(offset);
                        }
                        state = match c {
                            '"' => State::String,
                            ';' => State::Between,
                            _ => State::Policy,
                        };
                    }
                }
            }
        }
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::{Location, check_id, policy_starts};

    #[test]
    fn locations() {
        let text = "ab\ncdé\nf";
        assert_eq!(
            Location::of_offset(text, 0),
            Location { line: 1, column: 1 }
        );
        assert_eq!(
            Location::of_offset(text, 3),
            Location { line: 2, column: 1 }
        );
        // After the two-byte é.
        assert_eq!(
            Location::of_offset(text, 7),
            Location { line: 2, column: 4 }
        );
        // Inside é: clamped back to its start.
        assert_eq!(
            Location::of_offset(text, 6),
            Location { line: 2, column: 3 }
        );
        assert_eq!(
            Location::of_offset(text, 100),
            Location { line: 3, column: 2 }
        );
    }

    #[test]
    fn policy_starts_skip_comments_and_strings() {
        let text = "// permit(principal, action, resource);\n\
                    @id(\"a;b\") permit(principal, action, resource) // c;\n\
                    when { \"x;\\\"y\" == \"z\" };\n  \n\
                    forbid(principal, action, resource);";
        let starts = policy_starts(text);
        assert_eq!(starts.len(), 2);
        assert!(text[starts[0]..].starts_with("@id(\"a;b\")"));
        assert!(text[starts[1]..].starts_with("forbid"));
        assert!(policy_starts("  // nothing\n").is_empty());
    }

    #[test]
    fn ids() {
        assert!(check_id("analysts-read-only").is_ok());
        assert!(check_id("team/payments:write.1_a").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("has space").is_err());
        assert!(check_id("quote\"").is_err());
        assert!(check_id(&"x".repeat(129)).is_err());
    }
}
