//! `application/x-www-form-urlencoded` in both directions, and HTML escaping: just what the
//! code flow's endpoints need, so the sandbox takes no URL crate for two dozen lines.
//! <https://url.spec.whatwg.org/#application/x-www-form-urlencoded>

use std::collections::HashMap;

/// Decoded form or query parameters, each name at most once: RFC 6749 §3.1 ("request and
/// response parameters MUST NOT be included more than once"), which also means a smuggled
/// second `redirect_uri` cannot mean one thing here and another elsewhere.
#[derive(Debug, Default)]
pub(super) struct Params(HashMap<String, String>);

impl Params {
    /// Parses `text` (a query string or a form body). The error names what is wrong.
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let mut params = HashMap::new();
        for pair in text.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name).ok_or("a parameter name is not valid percent-encoded UTF-8")?;
            let value = decode(value)
                .ok_or_else(|| format!("{name} is not valid percent-encoded UTF-8"))?;
            if params.insert(name.clone(), value).is_some() {
                return Err(format!("{name} is given more than once"));
            }
        }
        Ok(Self(params))
    }

    /// The value of `name`, if present and not empty.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The value of `name`, or an error saying it is missing.
    pub(super) fn require(&self, name: &str) -> Result<&str, String> {
        self.get(name).ok_or_else(|| format!("{name} is missing"))
    }
}

/// Decodes one component: `+` is a space, `%XX` a byte; the bytes must be UTF-8.
fn decode(component: &str) -> Option<String> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so the result is safe in a
/// query string whatever it holds.
pub(super) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Escapes text for an HTML element's content or a double-quoted attribute value.
pub(super) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_decodes() {
        let params = Params::parse("a=1&b=x+y%2Fz&c=&d&e=%C3%A9").unwrap();
        assert_eq!(params.get("a"), Some("1"));
        assert_eq!(params.get("b"), Some("x y/z"));
        assert_eq!(params.get("c"), None);
        assert_eq!(params.get("d"), None);
        assert_eq!(params.get("e"), Some("é"));
        assert_eq!(params.require("zz").unwrap_err(), "zz is missing");
    }

    #[test]
    fn refuses_hostile_input() {
        for bad in ["a=%", "a=%4", "a=%zz", "a=%FF", "%=1", "a=1&a=2"] {
            assert!(Params::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encoding_round_trips() {
        let value = "http://127.0.0.1:1/cb?x=1&y=é #";
        let params = Params::parse(&format!("v={}", encode(value))).unwrap();
        assert_eq!(params.get("v"), Some(value));
        assert_eq!(encode("a-b_c.d~e"), "a-b_c.d~e");
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
