//! Messages a client sends: lazily decoded views of the ones Postern inspects, and encoders for
//! the ones Postern itself sends to an upstream server.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

use crate::cursor::Cursor;
use crate::startup::{patch_length, put_cstr};
use crate::{Frame, WireError};

pub const BIND: u8 = b'B';
pub const CLOSE: u8 = b'C';
pub const COPY_DATA: u8 = b'd';
pub const COPY_DONE: u8 = b'c';
pub const COPY_FAIL: u8 = b'f';
pub const DESCRIBE: u8 = b'D';
pub const EXECUTE: u8 = b'E';
pub const FLUSH: u8 = b'H';
pub const FUNCTION_CALL: u8 = b'F';
pub const PARSE: u8 = b'P';
pub const PASSWORD: u8 = b'p';
pub const QUERY: u8 = b'Q';
pub const SYNC: u8 = b'S';
pub const TERMINATE: u8 = b'X';

/// The SQL text of a Query message, for classification (see [`sql_text`] on text that is not
/// UTF-8).
pub fn query_text(frame: &Frame) -> Result<Cow<'_, str>, WireError> {
    let mut cursor = Cursor::new(frame.body(), "Query");
    let sql = sql_text(cursor.cstr_bytes()?);
    expect_end(&cursor, "Query")?;
    Ok(sql)
}

/// A Parse message: statement name (empty for the unnamed one) and its SQL text.
#[derive(Debug, PartialEq, Eq)]
pub struct Parse<'a> {
    /// The statement name, which must be UTF-8.
    pub statement: &'a str,
    /// The SQL text, for classification (see [`sql_text`]).
    pub sql: Cow<'a, str>,
}

pub fn parse(frame: &Frame) -> Result<Parse<'_>, WireError> {
    let mut cursor = Cursor::new(frame.body(), "Parse");
    let statement = cursor.cstr()?;
    let sql = sql_text(cursor.cstr_bytes()?);
    let count = cursor.i16()?;
    let count = usize::try_from(count).map_err(|_| WireError::Malformed {
        what: "Parse",
        why: "negative parameter count",
    })?;
    cursor.bytes(count * 4)?;
    expect_end(&cursor, "Parse")?;
    Ok(Parse { statement, sql })
}

/// The portal and statement names of a Bind message (the rest is relayed untouched).
pub fn bind_names(frame: &Frame) -> Result<(&str, &str), WireError> {
    let mut cursor = Cursor::new(frame.body(), "Bind");
    let portal = cursor.cstr()?;
    let statement = cursor.cstr()?;
    Ok((portal, statement))
}

/// Close or Describe: `'S'` for a prepared statement or `'P'` for a portal, and its name.
pub fn target(frame: &Frame) -> Result<(u8, &str), WireError> {
    let what = if frame.tag() == CLOSE {
        "Close"
    } else {
        "Describe"
    };
    let mut cursor = Cursor::new(frame.body(), what);
    let kind = cursor.u8()?;
    if kind != b'S' && kind != b'P' {
        return Err(WireError::Malformed {
            what,
            why: "target is neither 'S' nor 'P'",
        });
    }
    let name = cursor.cstr()?;
    expect_end(&cursor, what)?;
    Ok((kind, name))
}

/// An Execute message: which portal, and at most how many rows (0: all).
#[derive(Debug, PartialEq, Eq)]
pub struct Execute<'a> {
    pub portal: &'a str,
    pub max_rows: i32,
}

pub fn execute(frame: &Frame) -> Result<Execute<'_>, WireError> {
    let mut cursor = Cursor::new(frame.body(), "Execute");
    let portal = cursor.cstr()?;
    let max_rows = cursor.i32()?;
    expect_end(&cursor, "Execute")?;
    Ok(Execute { portal, max_rows })
}

/// The body of a PasswordMessage: for Postern, the client's token. It must be a NUL-terminated
/// string; anything else is malformed.
pub fn password(frame: &Frame) -> Result<&str, WireError> {
    if frame.tag() != PASSWORD {
        return Err(WireError::Malformed {
            what: "password message",
            why: "expected a password message",
        });
    }
    let mut cursor = Cursor::new(frame.body(), "password message");
    let text = cursor.cstr()?;
    expect_end(&cursor, "password message")?;
    Ok(text)
}

/// A SASLInitialResponse: the mechanism the client chose and its initial response, `None` when
/// the client sent none (length -1), in which case the server answers with an empty
/// AuthenticationSASLContinue and the response comes in the next SASLResponse.
#[derive(Debug, PartialEq, Eq)]
pub struct SaslInitialResponse<'a> {
    pub mechanism: &'a str,
    pub data: Option<&'a [u8]>,
}

/// Decodes a SASLInitialResponse (a `p` message; the protocol state says which kind it is).
pub fn sasl_initial_response(frame: &Frame) -> Result<SaslInitialResponse<'_>, WireError> {
    const WHAT: &str = "SASLInitialResponse";
    if frame.tag() != PASSWORD {
        return Err(WireError::Malformed {
            what: WHAT,
            why: "expected a SASLInitialResponse message",
        });
    }
    let mut cursor = Cursor::new(frame.body(), WHAT);
    let mechanism = cursor.cstr()?;
    let length = cursor.i32()?;
    let data = match length {
        -1 => None,
        length => {
            let length = usize::try_from(length).map_err(|_| WireError::Malformed {
                what: WHAT,
                why: "negative response length",
            })?;
            Some(cursor.bytes(length)?)
        }
    };
    expect_end(&cursor, WHAT)?;
    Ok(SaslInitialResponse { mechanism, data })
}

/// The data of a SASLResponse (a `p` message after the initial one): opaque to the protocol.
pub fn sasl_response(frame: &Frame) -> Result<&[u8], WireError> {
    if frame.tag() != PASSWORD {
        return Err(WireError::Malformed {
            what: "SASLResponse",
            why: "expected a SASLResponse message",
        });
    }
    Ok(frame.body())
}

/// SQL text as the classifier should read it. A client may use any ASCII-safe
/// `client_encoding` (LATIN1, say), in which a statement need not be UTF-8; yet it must still be
/// classified, never relayed unread. In those encodings every byte of a non-ASCII character is
/// 0x80 or above, and PostgreSQL's lexer treats all such bytes alike (as identifier or literal
/// characters). Replacing each undecodable sequence with U+FFFD (itself non-ASCII) therefore
/// keeps every ASCII byte — keywords, quotes, backslashes, semicolons — where the server sees it:
/// the text parses into the same statements, differing only inside non-ASCII names and literals.
/// The bytes relayed upstream are always the client's own.
fn sql_text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

fn expect_end(cursor: &Cursor<'_>, what: &'static str) -> Result<(), WireError> {
    if cursor.is_empty() {
        Ok(())
    } else {
        Err(WireError::Malformed {
            what,
            why: "unexpected trailing bytes",
        })
    }
}

fn begin(out: &mut BytesMut, tag: u8) -> usize {
    out.put_u8(tag);
    let start = out.len();
    out.put_i32(0);
    start
}

/// Encodes a simple Query.
pub fn encode_query(sql: &str, out: &mut BytesMut) {
    let start = begin(out, QUERY);
    put_cstr(out, sql);
    patch_length(out, start);
}

/// Encodes a Parse of an unnamed or named statement with no parameter types.
pub fn encode_parse(statement: &str, sql: &str, out: &mut BytesMut) {
    let start = begin(out, PARSE);
    put_cstr(out, statement);
    put_cstr(out, sql);
    out.put_i16(0);
    patch_length(out, start);
}

/// Encodes a Parse of `statement` from the content of another Parse (see [`parse_content`]).
pub fn encode_parse_content(statement: &str, content: &[u8], out: &mut BytesMut) {
    let start = begin(out, PARSE);
    put_cstr(out, statement);
    out.put_slice(content);
    patch_length(out, start);
}

/// Encodes a Bind of `statement` to the unnamed portal, with no parameters and text results.
pub fn encode_bind_unnamed(statement: &str, out: &mut BytesMut) {
    let start = begin(out, BIND);
    put_cstr(out, "");
    put_cstr(out, statement);
    out.put_i16(0);
    out.put_i16(0);
    out.put_i16(0);
    patch_length(out, start);
}

/// Encodes an Execute of `portal`, all rows.
pub fn encode_execute(portal: &str, out: &mut BytesMut) {
    let start = begin(out, EXECUTE);
    put_cstr(out, portal);
    out.put_i32(0);
    patch_length(out, start);
}

/// Encodes a Close of a prepared statement (`b'S'`) or a portal (`b'P'`).
pub fn encode_close(kind: u8, name: &str, out: &mut BytesMut) {
    let start = begin(out, CLOSE);
    out.put_u8(kind);
    put_cstr(out, name);
    patch_length(out, start);
}

/// What a Parse prepares, without its name: the SQL text and the parameter types, as sent. Two
/// Parses with the same content prepare the same statement.
pub fn parse_content(frame: &Frame) -> Result<&[u8], WireError> {
    let body = frame.body();
    let name_end = cstr_end(body, "Parse")?;
    Ok(&body[name_end + 1..])
}

/// Re-encodes a client's Parse, Bind, Describe or Close with its prepared statement named
/// `statement` instead, the rest of the message unchanged. Describe and Close of a portal, and
/// every other message, are copied as they are.
pub fn encode_renamed(frame: &Frame, statement: &str, out: &mut BytesMut) -> Result<(), WireError> {
    let body = frame.body();
    let (before, after) = match frame.tag() {
        PARSE => (0, cstr_end(body, "Parse")?),
        BIND => {
            let portal_end = cstr_end(body, "Bind")?;
            let statement_end = portal_end + 1 + cstr_end(&body[portal_end + 1..], "Bind")?;
            (portal_end + 1, statement_end)
        }
        DESCRIBE | CLOSE if body.first() == Some(&b'S') => {
            (1, 1 + cstr_end(&body[1..], "Describe or Close")?)
        }
        _ => {
            out.put_slice(frame.raw());
            return Ok(());
        }
    };
    let start = begin(out, frame.tag());
    out.put_slice(&body[..before]);
    put_cstr(out, statement);
    out.put_slice(&body[after + 1..]);
    patch_length(out, start);
    Ok(())
}

/// Where the NUL ending the string at the start of `bytes` is.
fn cstr_end(bytes: &[u8], what: &'static str) -> Result<usize, WireError> {
    bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or(WireError::Malformed {
            what,
            why: "unterminated string",
        })
}

/// Encodes a cleartext or md5 PasswordMessage.
pub fn encode_password(password: &str, out: &mut BytesMut) {
    let start = begin(out, PASSWORD);
    put_cstr(out, password);
    patch_length(out, start);
}

/// Encodes a SASLInitialResponse.
pub fn encode_sasl_initial_response(mechanism: &str, data: &[u8], out: &mut BytesMut) {
    let start = begin(out, PASSWORD);
    put_cstr(out, mechanism);
    out.put_i32(i32::try_from(data.len()).unwrap_or(i32::MAX));
    out.put_slice(data);
    patch_length(out, start);
}

/// Encodes a SASLResponse.
pub fn encode_sasl_response(data: &[u8], out: &mut BytesMut) {
    let start = begin(out, PASSWORD);
    out.put_slice(data);
    patch_length(out, start);
}

/// Encodes Sync.
pub fn encode_sync(out: &mut BytesMut) {
    let start = begin(out, SYNC);
    patch_length(out, start);
}

/// Encodes Terminate.
pub fn encode_terminate(out: &mut BytesMut) {
    let start = begin(out, TERMINATE);
    patch_length(out, start);
}

/// Builds a frame from a message encoded by one of the functions above.
pub fn frame_of(encoded: BytesMut) -> Frame {
    Frame::from_raw(encoded.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renaming_keeps_everything_but_the_statement_name() {
        let mut parse = BytesMut::new();
        encode_parse("client_s1", "SELECT 1", &mut parse);
        let parse = frame_of(parse);
        let mut out = BytesMut::new();
        encode_renamed(&parse, "postern_tx_7", &mut out).unwrap();
        let renamed = frame_of(out);
        let decoded = super::parse(&renamed).unwrap();
        assert_eq!(decoded.statement, "postern_tx_7");
        assert_eq!(decoded.sql, "SELECT 1");
        assert_eq!(
            parse_content(&renamed).unwrap(),
            parse_content(&parse).unwrap()
        );

        let mut bind = BytesMut::new();
        encode_bind_unnamed("client_s1", &mut bind);
        let mut out = BytesMut::new();
        encode_renamed(&frame_of(bind.clone()), "postern_tx_7", &mut out).unwrap();
        let renamed = frame_of(out);
        assert_eq!(bind_names(&renamed).unwrap(), ("", "postern_tx_7"));
        assert_eq!(
            renamed.body().len(),
            frame_of(bind).body().len() - "client_s1".len() + "postern_tx_7".len()
        );

        let mut close = BytesMut::new();
        encode_close(b'S', "client_s1", &mut close);
        let mut out = BytesMut::new();
        encode_renamed(&frame_of(close), "postern_tx_7", &mut out).unwrap();
        assert_eq!(target(&frame_of(out)).unwrap(), (b'S', "postern_tx_7"));

        let mut portal = BytesMut::new();
        encode_close(b'P', "c1", &mut portal);
        let mut out = BytesMut::new();
        encode_renamed(&frame_of(portal), "postern_tx_7", &mut out).unwrap();
        assert_eq!(target(&frame_of(out)).unwrap(), (b'P', "c1"));
    }

    #[test]
    fn renaming_a_malformed_message_is_an_error() {
        let mut out = BytesMut::new();
        let broken = frame_of(BytesMut::from(&b"P\0\0\0\x07abc"[..]));
        assert!(encode_renamed(&broken, "x", &mut out).is_err());
        assert!(parse_content(&broken).is_err());
    }

    use crate::FrameDecoder;
    use crate::frame::Side;

    fn decode(buf: BytesMut) -> Frame {
        let mut buf = buf;
        FrameDecoder::new(Side::Frontend, 1 << 20)
            .decode(&mut buf)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn query_and_parse_round_trip() {
        let mut buf = BytesMut::new();
        encode_query("SELECT 1; SELECT 2", &mut buf);
        assert_eq!(query_text(&decode(buf)).unwrap(), "SELECT 1; SELECT 2");
        let mut buf = BytesMut::new();
        encode_parse("s1", "SELECT $1", &mut buf);
        assert_eq!(
            parse(&decode(buf)).unwrap(),
            Parse {
                statement: "s1",
                sql: "SELECT $1".into()
            }
        );
    }

    #[test]
    fn sql_that_is_not_utf8_keeps_its_ascii_structure() {
        // LATIN1 "café", then a statement the guard must see.
        let mut raw = BytesMut::new();
        raw.put_u8(QUERY);
        let sql = b"SELECT 'caf\xe9'; RESET ROLE\0";
        raw.put_i32(4 + i32::try_from(sql.len()).unwrap());
        raw.put_slice(sql);
        assert_eq!(
            query_text(&decode(raw)).unwrap(),
            "SELECT 'caf\u{fffd}'; RESET ROLE"
        );
        // A lead byte followed by a quote: the quote is not swallowed.
        let mut raw = BytesMut::new();
        raw.put_u8(PARSE);
        let body = b"s\0SELECT '\xc3'; RESET ROLE\0\0\0";
        raw.put_i32(4 + i32::try_from(body.len()).unwrap());
        raw.put_slice(body);
        let frame = decode(raw);
        let parsed = parse(&frame).unwrap();
        assert_eq!(parsed.sql, "SELECT '\u{fffd}'; RESET ROLE");
        // Names stay strict.
        let mut raw = BytesMut::new();
        raw.put_u8(PARSE);
        let body = b"s\xe9\0SELECT 1\0\0\0";
        raw.put_i32(4 + i32::try_from(body.len()).unwrap());
        raw.put_slice(body);
        assert!(parse(&decode(raw)).is_err());
    }

    #[test]
    fn password_must_be_one_string() {
        let mut buf = BytesMut::new();
        encode_password("eyJ.token", &mut buf);
        assert_eq!(password(&decode(buf)).unwrap(), "eyJ.token");
        let mut raw = BytesMut::new();
        raw.put_u8(PASSWORD);
        raw.put_i32(4 + 3);
        raw.put_slice(b"abc");
        assert!(password(&decode(raw)).is_err());
    }

    #[test]
    fn sasl_messages() {
        let mut buf = BytesMut::new();
        encode_sasl_initial_response("OAUTHBEARER", b"n,,\x01auth=\x01\x01", &mut buf);
        assert_eq!(
            sasl_initial_response(&decode(buf)).unwrap(),
            SaslInitialResponse {
                mechanism: "OAUTHBEARER",
                data: Some(b"n,,\x01auth=\x01\x01"),
            }
        );
        // No initial response: length -1.
        let mut raw = BytesMut::new();
        let start = begin(&mut raw, PASSWORD);
        put_cstr(&mut raw, "OAUTHBEARER");
        raw.put_i32(-1);
        patch_length(&mut raw, start);
        assert_eq!(
            sasl_initial_response(&decode(raw)).unwrap(),
            SaslInitialResponse {
                mechanism: "OAUTHBEARER",
                data: None,
            }
        );
        // A length that lies, either way, a negative one, trailing bytes, a bare password.
        for (length, body) in [(10, &b"abc"[..]), (1, &b"abc"[..]), (-2, &b""[..])] {
            let mut raw = BytesMut::new();
            let start = begin(&mut raw, PASSWORD);
            put_cstr(&mut raw, "OAUTHBEARER");
            raw.put_i32(length);
            raw.put_slice(body);
            patch_length(&mut raw, start);
            assert!(sasl_initial_response(&decode(raw)).is_err(), "{length}");
        }
        let mut buf = BytesMut::new();
        encode_password("eyJ.token", &mut buf);
        assert!(sasl_initial_response(&decode(buf)).is_err());

        let mut buf = BytesMut::new();
        encode_sasl_response(b"\x01", &mut buf);
        assert_eq!(sasl_response(&decode(buf)).unwrap(), b"\x01");
        let mut buf = BytesMut::new();
        encode_query("SELECT 1", &mut buf);
        assert!(sasl_response(&decode(buf)).is_err());
    }

    #[test]
    fn parse_with_lying_parameter_count_is_malformed() {
        let mut raw = BytesMut::new();
        let start = begin(&mut raw, PARSE);
        put_cstr(&mut raw, "");
        put_cstr(&mut raw, "SELECT 1");
        raw.put_i16(100);
        patch_length(&mut raw, start);
        assert!(parse(&decode(raw)).is_err());
    }
}
