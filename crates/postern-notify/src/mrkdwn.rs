//! Text for Slack's `mrkdwn`: escaping and cutting to Slack's length limits.
//!
//! Slack reads `&`, `<` and `>` as control characters (`<!channel>` pings a whole channel,
//! `<https://evil|Approve>` disguises a link), and asks senders to escape exactly those three
//! (<https://api.slack.com/reference/surfaces/formatting#escaping>). Every value that came from a
//! user — a reason, a statement, a name — goes through [`escape`] before it is placed in a block.

/// Marks text that was cut.
const ELLIPSIS: char = '…';

/// `text` escaped for mrkdwn, at most `max_chars` characters long (Slack counts characters),
/// ending with `…` when cut. An entity (`&amp;`) is never cut in half.
pub(crate) fn escape(text: &str, max_chars: usize) -> String {
    let (escaped, complete) = escape_within(text, max_chars);
    if complete {
        return escaped;
    }
    let (mut escaped, _) = escape_within(text, max_chars.saturating_sub(1));
    escaped.push(ELLIPSIS);
    escaped
}

/// `text` as the content of a mrkdwn code block (the block's fences included), at most
/// `max_chars` characters long. Slack has no way to escape a backtick, so a run of backticks
/// that could close the block early gets a zero-width space after each backtick; the exact text
/// stays in the structured `postern.fields`.
pub(crate) fn code_block(text: &str, max_chars: usize) -> String {
    const FENCE: &str = "```";
    let mut unfenced = String::with_capacity(text.len());
    let mut previous = None;
    for ch in text.chars() {
        if ch == '`' && previous == Some('`') {
            unfenced.push('\u{200B}');
        }
        unfenced.push(ch);
        previous = Some(ch);
    }
    // The fences and the newlines after and before them.
    let budget = max_chars.saturating_sub(2 * FENCE.len() + 2);
    format!("{FENCE}\n{}\n{FENCE}", escape(&unfenced, budget))
}

/// `text` cut to at most `max_chars` characters, ending with `…` when cut. For plain (not
/// mrkdwn) strings.
pub(crate) fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some(_) => {
            let keep = max_chars.saturating_sub(1);
            let end = text
                .char_indices()
                .nth(keep)
                .map_or(text.len(), |(at, _)| at);
            let mut cut = text[..end].to_owned();
            cut.push(ELLIPSIS);
            cut
        }
    }
}

/// Escapes as much of `text` as fits in `max_chars` characters; the flag says whether all of it
/// did.
fn escape_within(text: &str, max_chars: usize) -> (String, bool) {
    let mut out = String::with_capacity(text.len().min(max_chars.saturating_mul(4)));
    let mut used = 0;
    for ch in text.chars() {
        let piece = match ch {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            _ => {
                if used + 1 > max_chars {
                    return (out, false);
                }
                out.push(ch);
                used += 1;
                continue;
            }
        };
        if used + piece.len() > max_chars {
            return (out, false);
        }
        out.push_str(piece);
        used += piece.len();
    }
    (out, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_three_control_characters() {
        assert_eq!(
            escape("<!channel> a & b <https://evil|Approve>", 100),
            "&lt;!channel&gt; a &amp; b &lt;https://evil|Approve&gt;"
        );
        assert_eq!(escape("*bold* _it_ `code` é", 100), "*bold* _it_ `code` é");
    }

    #[test]
    fn cuts_to_the_limit_in_characters() {
        assert_eq!(escape("abcdef", 6), "abcdef");
        assert_eq!(escape("abcdefg", 6), "abcde…");
        assert_eq!(escape("ééééééé", 6).chars().count(), 6);
        // An entity that does not fit is left out whole.
        assert_eq!(escape("abcd<", 6), "abcd…");
        assert_eq!(escape("a&", 6), "a&amp;");
        assert_eq!(escape("ab&", 6), "ab…");
        assert_eq!(escape("anything", 0), "…");
        let long = "<".repeat(5000);
        let cut = escape(&long, 3000);
        assert!(cut.chars().count() <= 3000);
        assert!(cut.ends_with("&lt;…"));
    }

    #[test]
    fn code_blocks_cannot_be_closed_early() {
        assert_eq!(code_block("select 1", 100), "```\nselect 1\n```");
        let block = code_block("select '```<b>'", 100);
        assert_eq!(block, "```\nselect '`\u{200B}`\u{200B}`&lt;b&gt;'\n```");
        assert_eq!(block.matches("```").count(), 2);
        let long = code_block(&"x".repeat(10_000), 3000);
        assert_eq!(long.chars().count(), 3000);
        assert!(long.ends_with("…\n```"));
    }

    #[test]
    fn truncates_plain_text() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(truncate("", 0), "");
    }
}
