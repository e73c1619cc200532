//! A text's *shape*: the text with its plain constants (numbers, standard string literals)
//! replaced by markers, everything else kept byte for byte. Texts that differ only in such
//! constants — `… WHERE aid = 1` and `… WHERE aid = 2` — have one shape, and for plain
//! reads and writes (see [`Classifier`](crate::Classifier)) one analysis.
//!
//! The reading is deliberately narrow. It must never take for a constant what PostgreSQL's lexer
//! reads as code, so any text holding something whose lexing depends on more than this module
//! follows has no shape and is parsed: backslashes (escape strings, and `standard_conforming_
//! strings`, which a role or database may default to off), dollar quoting, comments, prefixed
//! strings (`E'…'`, `B'…'`, `X'…'`, `N'…'`, `U&'…'`), numbers other than plain decimals,
//! non-ASCII bytes. Quoted identifiers and `$n` parameters are kept as written.

/// Stands for a numeric constant; no text with a shape contains it.
const NUMBER: &str = "\u{1}N";
/// Stands for a string constant.
const STRING: &str = "\u{1}S";

/// The shape of `sql`, or `None` when this reading cannot vouch for it.
pub(crate) fn shape(sql: &str) -> Option<String> {
    let bytes = sql.as_bytes();
    if bytes.iter().any(|&b| b == b'\\' || b == 1 || !b.is_ascii()) {
        return None;
    }
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let previous = i.checked_sub(1).map(|p| bytes[p]);
        match b {
            b'\'' => {
                // A prefix letter, digit or `&` makes it another kind of string.
                if previous.is_some_and(|p| is_identifier_byte(p) || p == b'&') {
                    return None;
                }
                i = quoted_end(bytes, i)?;
                out.push_str(STRING);
                continue;
            }
            b'"' => {
                let end = quoted_end(bytes, i)?;
                out.push_str(&sql[i..end]);
                i = end;
                continue;
            }
            b'$' => {
                // `$n`: a parameter, kept. Anything else is dollar quoting.
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if digits == 0 || previous.is_some_and(is_identifier_byte) {
                    return None;
                }
                out.push_str(&sql[i..=i + digits]);
                i += 1 + digits;
                continue;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => return None,
            b'/' if bytes.get(i + 1) == Some(&b'*') => return None,
            b'0'..=b'9' if !previous.is_some_and(|p| is_identifier_byte(p) || p == b'.') => {
                i = number_end(bytes, i)?;
                out.push_str(NUMBER);
                continue;
            }
            _ => {}
        }
        // Identifiers and keywords are copied whole, so a digit inside one is never a number.
        let start = i;
        i += 1;
        if is_identifier_byte(b) {
            while i < bytes.len() && is_identifier_byte(bytes[i]) {
                i += 1;
            }
        }
        out.push_str(&sql[start..i]);
    }
    Some(out)
}

fn is_identifier_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

/// Past the quoted run starting at `start` — a standard string (`'`) or a quoted identifier
/// (`"`) — in which a doubled quote stands for itself.
fn quoted_end(bytes: &[u8], start: usize) -> Option<usize> {
    let quote = bytes[start];
    let mut i = start + 1;
    loop {
        match *bytes.get(i)? {
            b if b == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            b if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// Past the plain decimal (`12`, `1.5`) starting at `start`; `None` for anything the lexer might
/// read otherwise (`1e5`, `0x1f`, `1_000`, `1.`, `1..2`, `12abc`).
fn number_end(bytes: &[u8], start: usize) -> Option<usize> {
    let digits = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let mut i = start + digits(start);
    if bytes.get(i) == Some(&b'.') {
        let fraction = digits(i + 1);
        if fraction == 0 {
            return None;
        }
        i += 1 + fraction;
    }
    match bytes.get(i) {
        Some(&next) if is_identifier_byte(next) || next == b'.' => None,
        _ => Some(i),
    }
}

#[cfg(test)]
mod tests {
    use super::shape;

    #[test]
    fn constants_are_replaced_and_code_kept() {
        let one = shape("SELECT abalance FROM pgbench_accounts WHERE aid = 12;").unwrap();
        let two = shape("SELECT abalance FROM pgbench_accounts WHERE aid = 99021;").unwrap();
        assert_eq!(one, two);
        assert_eq!(
            shape("SELECT 'it''s', 1.5 FROM t WHERE x = 'a'").unwrap(),
            shape("SELECT 'other', 2.25 FROM t WHERE x = ''").unwrap()
        );
        // A number and a string are different constants.
        assert_ne!(
            shape("SELECT * FROM t WHERE x = 1"),
            shape("SELECT * FROM t WHERE x = '1'")
        );
        // Identifiers, parameters and quoted identifiers are code.
        assert_ne!(shape("SELECT * FROM t1"), shape("SELECT * FROM t2"));
        assert_ne!(shape("SELECT $1"), shape("SELECT $2"));
        assert_ne!(
            shape("SELECT \"a'b\" FROM t"),
            shape("SELECT \"a'c\" FROM t")
        );
        assert_eq!(
            shape("SELECT \"a'b\" FROM t WHERE x = 3").unwrap(),
            "SELECT \"a'b\" FROM t WHERE x = \u{1}N"
        );
        // A fraction without its integer part is kept as written.
        assert_ne!(shape("SELECT .5"), shape("SELECT .6"));
        // Whitespace is kept: PostgreSQL joins string constants separated by a newline.
        assert_ne!(shape("SELECT 'a' 'b'"), shape("SELECT 'a'\n'b'"));
    }

    #[test]
    fn whatever_this_reading_cannot_vouch_for_has_no_shape() {
        for sql in [
            "SELECT E'a\\'; DELETE FROM t; --'",
            "SELECT 'a\\'",
            "SELECT $$a$$",
            "SELECT $tag$a$tag$",
            "SELECT 1 -- comment with a ' quote",
            "SELECT /* ' */ 1",
            "SELECT B'101'",
            "SELECT X'1f'",
            "SELECT N'text'",
            "SELECT U&'d\\0061t'",
            "SELECT u&'x'",
            "SELECT 1e5",
            "SELECT 0x1f",
            "SELECT 1_000",
            "SELECT 1.",
            "SELECT 'unterminated",
            "SELECT \"unterminated",
            "SELECT 'café'",
            "SELECT '\u{1}N'",
        ] {
            assert_eq!(shape(sql), None, "{sql}");
        }
    }
}
