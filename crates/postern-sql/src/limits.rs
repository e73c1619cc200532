//! Running libpg_query on hostile text without letting the text take the proxy down.
//!
//! libpg_query turns its parse tree into protobuf recursively in C, and the packing is quadratic
//! in the tree's depth (<https://github.com/pganalyze/pg_query/issues/339>): `SELECT 1+1+...+1`
//! with 10,000 terms overflows a 2 MiB thread stack (aborting the whole process), and with
//! 100,000 terms takes seconds. pg_query then refuses to decode trees deeper than prost's
//! recursion limit (100 messages: about 50 chained operators or joins, or 25 nested subqueries),
//! which becomes a parse error, so deep texts could never be classified anyway. Hence:
//! - texts longer than [`MAX_ANALYZED_SQL_LEN`] are not parsed;
//! - texts longer than [`INLINE_PARSE_MAX_LEN`] are first scanned (the lexer is linear and not
//!   recursive) for how deeply they could nest, and refused above [`MAX_NESTING_ESTIMATE`];
//! - and then parsed on a thread of their own whose stack grows with the text, so that even a
//!   wrong estimate cannot overflow a stack.
//!
//! Everything refused here becomes [`Analysis::parse_error`], which the guard refuses unless the
//! client may run raw statements: fail closed, with a reason.

use std::panic::{AssertUnwindSafe, catch_unwind};

use pg_query::protobuf::Token;

use crate::classify::analyze_text;
use crate::facts::Analysis;

/// The longest text Postern parses. PostgreSQL itself accepts up to its 1 GB message limit
/// (`PQ_LARGE_MESSAGE_LIMIT` in `src/include/libpq/libpq.h`); bulk loads belong in `COPY`, whose
/// data is not SQL text.
pub const MAX_ANALYZED_SQL_LEN: usize = 1024 * 1024;

/// Texts up to this length are parsed on the caller's thread. libpg_query uses at most about 700
/// bytes of stack per tree level, and a level needs at least two bytes of text (`+1`, or eight
/// for `(SELECT `), so 2 KiB of text needs well under 1 MiB of stack and a few milliseconds.
const INLINE_PARSE_MAX_LEN: usize = 2 * 1024;

/// Longer texts are parsed on a thread of their own with this many bytes of stack per byte of
/// text (the worst case above, with a margin), on top of [`PARSER_STACK_BASE`]. The stack is
/// reserved, not committed: only what the parse touches is used.
const PARSER_STACK_PER_BYTE: usize = 512;

/// The part of a parser thread's stack that does not depend on the text.
const PARSER_STACK_BASE: usize = 1024 * 1024;

/// The deepest nesting [`nesting_estimate`] lets through to the parser. Real trees deeper than
/// about 100 levels cannot be decoded anyway; this bound only has to keep the quadratic packing
/// cheap (a few milliseconds at this depth) while never refusing a text the parser would accept:
/// the estimate over-counts flat constructs, such as a long `a = 1 AND b = 2 AND ...`.
const MAX_NESTING_ESTIMATE: usize = 4096;

/// What one open parenthesis or bracket adds to the estimate: a nested subquery is several tree
/// levels (`SubLink`, `SelectStmt`, `ResTarget`, ...).
const NESTING_PER_PAREN: usize = 4;

/// Parses and classifies `sql` within the limits above, and redacts it for the audit log. Never
/// panics and never overflows the caller's stack. CPU-bound: about a millisecond per few
/// kilobytes of text.
pub(crate) fn analyze_uncached(sql: &str) -> Analysis {
    let mut analysis = analyze_bounded(sql);
    // A text too long to analyse is not scanned for redaction either.
    analysis.redacted = if sql.len() > MAX_ANALYZED_SQL_LEN {
        crate::REDACTED_PLACEHOLDER.to_owned()
    } else {
        crate::redact(sql)
    };
    analysis.text = sql.to_owned();
    analysis
}

fn analyze_bounded(sql: &str) -> Analysis {
    if sql.len() > MAX_ANALYZED_SQL_LEN {
        return failed(format!(
            "the text is {} bytes long, more than the {MAX_ANALYZED_SQL_LEN} bytes Postern analyses",
            sql.len()
        ));
    }
    if sql.len() <= INLINE_PARSE_MAX_LEN {
        return analyze_guarded(sql);
    }
    if nesting_estimate(sql).is_some_and(|depth| depth > MAX_NESTING_ESTIMATE) {
        return failed("the statement is nested too deeply to analyse".to_owned());
    }
    let stack = PARSER_STACK_BASE + sql.len() * PARSER_STACK_PER_BYTE;
    std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .name("postern-sql-parse".to_owned())
            .stack_size(stack)
            .spawn_scoped(scope, || analyze_guarded(sql))
        {
            Ok(parser) => parser
                .join()
                .unwrap_or_else(|_| failed(PARSER_FAILED.to_owned())),
            Err(_) => failed("Postern could not start a parser for a text this long".to_owned()),
        }
    })
}

const PARSER_FAILED: &str = "the SQL parser failed on this text";

fn failed(message: String) -> Analysis {
    Analysis {
        statements: Vec::new(),
        parse_error: Some(message),
        fingerprint: None,
        redacted: String::new(),
        text: String::new(),
    }
}

fn analyze_guarded(sql: &str) -> Analysis {
    catch_unwind(AssertUnwindSafe(|| analyze_text(sql)))
        .unwrap_or_else(|_| failed(PARSER_FAILED.to_owned()))
}

/// An estimate, from the lexer's tokens, of how deep the parse tree of `sql` could be; `None` when
/// the text does not scan (the parser will then fail fast on the same lexer error).
///
/// Deep trees come from left-deep chains (operators, casts, `IS`, `COLLATE`, joins, set
/// operations: each level needs a token) and from nesting in parentheses. Per open parenthesis the
/// estimate counts the chain tokens since the last comma (commas separate siblings: list items,
/// arguments, rows), plus set operations, which chain across commas; and it sums over all open
/// parentheses. Flattened chains (`AND`, `OR`) are not counted.
fn nesting_estimate(sql: &str) -> Option<usize> {
    #[derive(Default)]
    struct Level {
        chain: usize,
        set_operations: usize,
    }
    let scanned = pg_query::scan(sql).ok()?;
    let mut levels = vec![Level::default()];
    // The sum over `levels` of their contributions, kept incrementally.
    let mut depth = 0usize;
    let mut deepest = 0usize;
    for token in &scanned.tokens {
        let token = Token::try_from(token.token).unwrap_or(Token::Nul);
        match token {
            Token::Ascii40 | Token::Ascii91 => {
                levels.push(Level::default());
                depth += NESTING_PER_PAREN;
            }
            Token::Ascii41 | Token::Ascii93 if levels.len() > 1 => {
                if let Some(level) = levels.pop() {
                    depth = depth
                        .saturating_sub(NESTING_PER_PAREN + level.chain + level.set_operations);
                }
            }
            Token::Ascii44 | Token::Ascii59 => {
                if let Some(level) = levels.last_mut() {
                    depth = depth.saturating_sub(level.chain);
                    level.chain = 0;
                    if token == Token::Ascii59 {
                        depth = depth.saturating_sub(level.set_operations);
                        level.set_operations = 0;
                    }
                }
            }
            Token::Union | Token::Intersect | Token::Except => {
                if let Some(level) = levels.last_mut() {
                    level.set_operations += 1;
                    depth += 1;
                }
            }
            _ if is_chain_token(token) => {
                if let Some(level) = levels.last_mut() {
                    level.chain += 1;
                    depth += 1;
                }
            }
            _ => {}
        }
        deepest = deepest.max(depth);
    }
    Some(deepest)
}

/// Tokens that can add a level to a left-deep chain: operators, casts, postfix and infix
/// keywords, `CASE`, joins.
fn is_chain_token(token: Token) -> bool {
    matches!(
        token,
        Token::Op
            | Token::Ascii37
            | Token::Ascii42
            | Token::Ascii43
            | Token::Ascii45
            | Token::Ascii47
            | Token::Ascii60
            | Token::Ascii61
            | Token::Ascii62
            | Token::Ascii94
            | Token::Typecast
            | Token::LessEquals
            | Token::GreaterEquals
            | Token::NotEquals
            | Token::At
            | Token::Between
            | Token::Case
            | Token::Collate
            | Token::Escape
            | Token::Ilike
            | Token::InP
            | Token::Is
            | Token::Isnull
            | Token::Join
            | Token::Like
            | Token::Not
            | Token::NotLa
            | Token::Notnull
            | Token::Operator
            | Token::Overlaps
            | Token::Similar
    )
}

#[cfg(test)]
mod tests {
    use super::{MAX_ANALYZED_SQL_LEN, MAX_NESTING_ESTIMATE, analyze_uncached, nesting_estimate};

    fn parse_error(sql: &str) -> Option<String> {
        analyze_uncached(sql).parse_error
    }

    #[test]
    fn deep_texts_fail_closed_without_crashing() {
        // Each of these overflows a 2 MiB stack or takes seconds if handed to libpg_query as is.
        for sql in [
            format!("SELECT 1{}", "+1".repeat(100_000)),
            format!("SELECT 1{}", "::int".repeat(20_000)),
            format!("SELECT {}1{}", "(SELECT ".repeat(3_000), ")".repeat(3_000)),
            format!("SELECT {} 1", "- ".repeat(50_000)),
        ] {
            let error = parse_error(&sql);
            assert!(error.is_some(), "{}", &sql[..40]);
        }
    }

    #[test]
    fn moderately_deep_texts_parse() {
        // Above the inline limit, but as deep as libpg_query's result can be decoded.
        let joins: String = (0..40)
            .map(|i| format!(" JOIN table_number_{i} ON table_number_{i}.id = t.id"))
            .collect();
        assert_eq!(parse_error(&format!("SELECT * FROM t{joins}")), None);
        // Long but flat: thousands of conditions and rows.
        let conditions: Vec<String> = (0..3000).map(|i| format!("c{i} = {i}")).collect();
        let flat = format!("SELECT * FROM t WHERE {}", conditions.join(" AND "));
        assert!(nesting_estimate(&flat).is_some_and(|d| d <= MAX_NESTING_ESTIMATE));
        assert_eq!(parse_error(&flat), None);
        let rows: Vec<String> = (0..5000).map(|i| format!("({i}, 'v' || {i})")).collect();
        assert_eq!(
            parse_error(&format!("INSERT INTO t VALUES {}", rows.join(", "))),
            None
        );
    }

    #[test]
    fn overlong_texts_are_not_parsed() {
        let sql = format!("SELECT '{}'", "x".repeat(MAX_ANALYZED_SQL_LEN));
        assert!(parse_error(&sql).is_some_and(|e| e.contains("bytes long")));
    }
}
