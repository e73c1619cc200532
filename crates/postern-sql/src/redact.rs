//! Redaction of secrets from SQL text before it reaches the audit log.
//!
//! Works on libpg_query's scanner tokens, not on the raw text, so that quoting, comments and
//! dollar quotes cannot hide a secret from it or make it cut the text in the wrong place. Two
//! things are replaced with `'***'`:
//! - the value after the `PASSWORD` keyword (`CREATE/ALTER ROLE ... [ENCRYPTED] PASSWORD '...'`,
//!   user-mapping `OPTIONS (password '...')`, also after `=`), whether a string, a number or a
//!   (mistyped) identifier;
//! - inside any string literal, the value of a `password=` key (libpq connection strings, as given
//!   to `dblink`) and the password of a `scheme://user:password@host` URI. A quoted value is
//!   redacted to the end of the literal.
//!
//! A text the scanner rejects (an unterminated quote, say) is replaced whole by
//! [`REDACTED_PLACEHOLDER`]: when Postern cannot tell where a secret ends, it logs none of it.

use pg_query::protobuf::{ScanToken, Token};

/// What [`redact`] returns for a text it cannot scan.
pub const REDACTED_PLACEHOLDER: &str =
    "/* statement text withheld: Postern could not scan it for secrets */";

/// What a secret is replaced with.
const MASK: &str = "***";

/// `sql` with passwords replaced by `'***'`, for the audit log.
#[must_use]
pub fn redact(sql: &str) -> String {
    if !may_hold_secret(sql) {
        return sql.to_owned();
    }
    redact_tokens(sql).unwrap_or_else(|| REDACTED_PLACEHOLDER.to_owned())
}

/// Whether `sql` could hold anything [`redact`] masks. Every secret it knows follows the word
/// `password` (the keyword, an identifier, a connection-string key: ASCII letters in any case)
/// or sits in a `scheme://user:password@host` URI, so a text with neither cannot hold one and
/// is not scanned: most statements, and scanning costs as much as a third of parsing. A text
/// that does not scan is logged whole here too, since it holds nothing that would be masked.
pub(crate) fn may_hold_secret(sql: &str) -> bool {
    const WORD: &[u8] = b"password";
    sql.contains("://")
        || sql
            .as_bytes()
            .windows(WORD.len())
            .any(|window| window.eq_ignore_ascii_case(WORD))
}

fn redact_tokens(sql: &str) -> Option<String> {
    let scanned = pg_query::scan(sql).ok()?;
    // Comments cannot separate PASSWORD from its value for our purposes.
    let tokens: Vec<&ScanToken> = scanned
        .tokens
        .iter()
        .filter(|t| !matches!(token(t), Token::SqlComment | Token::CComment))
        .collect();
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    for (i, tok) in tokens.iter().enumerate() {
        let start = usize::try_from(tok.start).ok()?;
        let end = usize::try_from(tok.end).ok()?;
        let text = sql.get(start..end)?;
        let replacement = if follows_password(sql, &tokens, i)? {
            Some(format!("'{MASK}'"))
        } else if is_string(token(tok)) {
            redact_literal(text)
        } else {
            None
        };
        if let Some(replacement) = replacement {
            out.push_str(sql.get(copied..start)?);
            out.push_str(&replacement);
            copied = end;
        }
    }
    out.push_str(sql.get(copied..)?);
    Some(out)
}

fn token(t: &ScanToken) -> Token {
    Token::try_from(t.token).unwrap_or(Token::Nul)
}

fn is_string(t: Token) -> bool {
    matches!(t, Token::Sconst | Token::Usconst)
}

/// Whether token `i` is the value of a `PASSWORD` keyword: directly after it (a constant or an
/// identifier), or after `PASSWORD =` (a constant).
fn follows_password(sql: &str, tokens: &[&ScanToken], i: usize) -> Option<bool> {
    let this = token(tokens[i]);
    let is_constant = matches!(
        this,
        Token::Sconst
            | Token::Usconst
            | Token::Iconst
            | Token::Fconst
            | Token::Bconst
            | Token::Xconst
    );
    let is_word = matches!(this, Token::Ident | Token::Uident);
    if !(is_constant || is_word) || i == 0 {
        return Some(false);
    }
    let previous = tokens[i - 1];
    if is_password_keyword(sql, previous)? {
        return Some(true);
    }
    if is_constant && i >= 2 && token(previous) == Token::Ascii61 {
        return is_password_keyword(sql, tokens[i - 2]);
    }
    Some(false)
}

/// The `PASSWORD` keyword, or an identifier spelled `password` (`"password"` in `OPTIONS`).
fn is_password_keyword(sql: &str, t: &ScanToken) -> Option<bool> {
    match token(t) {
        Token::Password => Some(true),
        Token::Ident => {
            let text = sql.get(usize::try_from(t.start).ok()?..usize::try_from(t.end).ok()?)?;
            Some(text.trim_matches('"').eq_ignore_ascii_case("password"))
        }
        _ => Some(false),
    }
}

/// A string literal token with connection-string and URI passwords masked, or `None` when it
/// holds none.
fn redact_literal(literal: &str) -> Option<String> {
    let (open, body, close) = split_literal(literal)?;
    let mut redacted = redact_conninfo(body);
    redacted = redact_uri_userinfo(&redacted);
    (redacted != body).then(|| format!("{open}{redacted}{close}"))
}

/// Splits a string token into opening delimiter (with any `E`/`U&` prefix), body and closing
/// delimiter. `None` for a shape it does not recognise.
fn split_literal(literal: &str) -> Option<(&str, &str, &str)> {
    if let Some(after_dollar) = literal.strip_prefix('$') {
        let tag_len = after_dollar.find('$')? + 2;
        if literal.len() < 2 * tag_len {
            return None;
        }
        let (open, rest) = literal.split_at(tag_len);
        let (body, close) = rest.split_at(rest.len() - tag_len);
        return Some((open, body, close));
    }
    let open_len = literal.find('\'')? + 1;
    if !literal.ends_with('\'') || literal.len() < open_len + 1 {
        return None;
    }
    Some((
        &literal[..open_len],
        &literal[open_len..literal.len() - 1],
        &literal[literal.len() - 1..],
    ))
}

/// Masks the value of every `password = value` in a libpq connection string.
fn redact_conninfo(body: &str) -> String {
    let lower = body.to_ascii_lowercase();
    let mut out = String::with_capacity(body.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find("password") {
        let key_end = search + found + "password".len();
        search = key_end;
        let after_key = &body[key_end..];
        let Some(eq) = after_key.trim_start().strip_prefix('=') else {
            continue;
        };
        let value = eq.trim_start();
        let value_start = body.len() - value.len();
        // A quoted value may contain spaces and escaped quotes: mask to the end of the literal.
        let value_end = if value.starts_with(['\'', '\\']) {
            body.len()
        } else {
            value_start
                + value
                    .find(|c: char| c.is_whitespace() || c == '&')
                    .unwrap_or(value.len())
        };
        out.push_str(&body[copied..value_start]);
        out.push_str(MASK);
        copied = value_end;
        search = value_end.max(search);
    }
    out.push_str(&body[copied..]);
    out
}

/// Masks the password in `scheme://user:password@host` URIs.
fn redact_uri_userinfo(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(scheme_end) = rest.find("://") {
        let authority_start = scheme_end + 3;
        out.push_str(&rest[..authority_start]);
        rest = &rest[authority_start..];
        let authority_end = rest
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
        {
            out.push_str(&authority[..=colon]);
            out.push_str(MASK);
            out.push_str(&authority[at..]);
        } else {
            out.push_str(authority);
        }
        rest = &rest[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::{REDACTED_PLACEHOLDER, redact};

    #[test]
    fn redacts_passwords() {
        let cases = [
            (
                "CREATE ROLE app LOGIN PASSWORD 'hunter2'",
                "CREATE ROLE app LOGIN PASSWORD '***'",
            ),
            (
                "alter user app with encrypted password 'hunter2' valid until '2030-01-01'",
                "alter user app with encrypted password '***' valid until '2030-01-01'",
            ),
            (
                "ALTER ROLE app PASSWORD /* c */ E'hun\\'ter2'",
                "ALTER ROLE app PASSWORD /* c */ '***'",
            ),
            (
                "ALTER ROLE app PASSWORD $pw$hunter2$pw$",
                "ALTER ROLE app PASSWORD '***'",
            ),
            (
                "ALTER ROLE app PASSWORD U&'hunter\\0032'",
                "ALTER ROLE app PASSWORD '***'",
            ),
            (
                "ALTER ROLE app PASSWORD NULL",
                "ALTER ROLE app PASSWORD NULL",
            ),
            (
                "CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'a', password 'hunter2')",
                "CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'a', password '***')",
            ),
            (
                "ALTER USER MAPPING FOR app SERVER s OPTIONS (SET \"password\" 'hunter2')",
                "ALTER USER MAPPING FOR app SERVER s OPTIONS (SET \"password\" '***')",
            ),
            (
                "SELECT * FROM dblink('host=db user=a password=hunter2 dbname=x', 'select 1') AS t(i int)",
                "SELECT * FROM dblink('host=db user=a password=*** dbname=x', 'select 1') AS t(i int)",
            ),
            (
                "SELECT dblink_connect('c', 'PASSWORD = hunter2')",
                "SELECT dblink_connect('c', 'PASSWORD = ***')",
            ),
            (
                "SELECT dblink_connect('c', 'dbname=x password=''hunter two'' user=a')",
                "SELECT dblink_connect('c', 'dbname=x password=***')",
            ),
            (
                "SELECT dblink_connect('postgresql://app:hunter2@db:5432/x')",
                "SELECT dblink_connect('postgresql://app:***@db:5432/x')",
            ),
            (
                "SELECT dblink_connect($$password=hunter2$$)",
                "SELECT dblink_connect($$password=***$$)",
            ),
            (
                "UPDATE users SET password = 'hunter2' WHERE id = 1",
                "UPDATE users SET password = '***' WHERE id = 1",
            ),
            ("SELECT 'no secrets here', 1", "SELECT 'no secrets here', 1"),
            ("SELECT password FROM users", "SELECT password FROM users"),
            // Syntax errors still get redacted, as long as the text scans.
            (
                "CREATE ROLE app PASSWORD 'hunter2' garbage garbage",
                "CREATE ROLE app PASSWORD '***' garbage garbage",
            ),
            (
                "CREATE ROLE app PASSWORD hunter2",
                "CREATE ROLE app PASSWORD '***'",
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(redact(sql), want, "{sql}");
        }
    }

    #[test]
    fn unscannable_text_that_may_hold_a_secret_is_withheld() {
        for sql in [
            "CREATE ROLE app PASSWORD 'hunter2",
            "SELECT $$password=hunter2",
            "SELECT 1\0 PASSWORD 'x'",
            "SELECT 'postgresql://app:hunter2@db",
        ] {
            assert_eq!(redact(sql), REDACTED_PLACEHOLDER, "{sql}");
        }
        // Nothing in it could be masked, scanned or not.
        assert_eq!(redact("SELECT $$hunter2"), "SELECT $$hunter2");
    }

    /// The shortcut for texts without `password` or `://` returns what scanning them would.
    #[test]
    fn texts_without_a_secret_shape_are_returned_as_scanning_would() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 4711",
            "SELECT 'it''s', E'tab\\there', $tag$ dollar $tag$, U&'\\0041' /* c */ -- d",
            "UPDATE users SET passwd = 'x', pass = 'y' WHERE name = 'PASS WORD'",
            "INSERT INTO t VALUES (B'101', X'1F', 1.5e3, 'sécurité')",
            "COPY t FROM STDIN WITH (FORMAT csv)",
        ] {
            assert!(!super::may_hold_secret(sql), "{sql}");
            assert_eq!(Some(redact(sql)), super::redact_tokens(sql), "{sql}");
        }
        for sql in ["ALTER ROLE a PaSsWoRd 'x'", "SELECT 'http://a:b@c'"] {
            assert!(super::may_hold_secret(sql), "{sql}");
        }
    }
}
