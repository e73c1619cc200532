//! Which client encodings Postern can read statements in.
//!
//! Postern parses statements as UTF-8/ASCII text. In SJIS, BIG5, GBK, GB18030, UHC, JOHAB and
//! SHIFT_JIS_2004 the second byte of a multibyte character can be an ASCII byte such as `'` or
//! `\`, so the server and Postern would split the same bytes into different tokens (the
//! CVE-2006-2313 family). Those encodings are refused; every other encoding PostgreSQL accepts is
//! ASCII-safe. Names are compared as PostgreSQL compares them (`clean_encoding_name` in
//! `src/common/encnames.c`): case-insensitively, ignoring everything that is not a letter or digit.

/// Encodings (cleaned names, as in `pg_encname_tbl`) whose multibyte characters never contain
/// ASCII bytes. Anything not listed, including unknown names, is treated as unsafe.
const ASCII_SAFE: &[&str] = &[
    "utf8",
    "unicode",
    "sqlascii",
    "euccn",
    "eucjp",
    "eucjis2004",
    "euckr",
    "euctw",
    "muleinternal",
    "latin1",
    "latin2",
    "latin3",
    "latin4",
    "latin5",
    "latin6",
    "latin7",
    "latin8",
    "latin9",
    "latin10",
    "iso88591",
    "iso88592",
    "iso88593",
    "iso88594",
    "iso88595",
    "iso88596",
    "iso88597",
    "iso88598",
    "iso88599",
    "iso885910",
    "iso885913",
    "iso885914",
    "iso885915",
    "iso885916",
    "koi8",
    "koi8r",
    "koi8u",
    "win",
    "win866",
    "win874",
    "win1250",
    "win1251",
    "win1252",
    "win1253",
    "win1254",
    "win1255",
    "win1256",
    "win1257",
    "win1258",
    "windows866",
    "windows874",
    "windows1250",
    "windows1251",
    "windows1252",
    "windows1253",
    "windows1254",
    "windows1255",
    "windows1256",
    "windows1257",
    "windows1258",
    "alt",
    "abc",
    "tcvn",
    "tcvn5712",
    "vscii",
];

/// Whether `name` is a client encoding Postern can read statements in: a known PostgreSQL
/// encoding (any case, `_`/`-`/spaces ignored) whose multibyte characters never contain ASCII
/// bytes. `SJIS`, `Shift_JIS`, `BIG5`, `GBK`, `GB18030`, `UHC`, `JOHAB`, `SHIFT_JIS_2004`, their
/// Windows code-page aliases and unknown names are not.
#[must_use]
pub fn is_ascii_safe_encoding(name: &str) -> bool {
    let cleaned: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    ASCII_SAFE.contains(&cleaned.as_str())
}

#[cfg(test)]
mod tests {
    use super::is_ascii_safe_encoding;

    #[test]
    fn encodings() {
        for safe in [
            "UTF8",
            "utf-8",
            "Unicode",
            "SQL_ASCII",
            "LATIN1",
            "ISO-8859-15",
            "EUC_JP",
            "WIN1252",
            "koi8-r",
            "MULE_INTERNAL",
        ] {
            assert!(is_ascii_safe_encoding(safe), "{safe}");
        }
        for unsafe_ in [
            "SJIS",
            "sjis",
            "Shift_JIS",
            "shift-jis",
            "SHIFT_JIS_2004",
            "MSKANJI",
            "WIN932",
            "windows-936",
            "BIG5",
            "Big-5",
            "GBK",
            "GB18030",
            "UHC",
            "JOHAB",
            "win950",
            "",
            "no_such_encoding",
            "auto",
        ] {
            assert!(!is_ascii_safe_encoding(unsafe_), "{unsafe_}");
        }
    }
}
