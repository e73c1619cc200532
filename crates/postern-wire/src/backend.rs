//! Messages a server sends: views of the few Postern looks at (authentication requests,
//! BackendKeyData, ReadyForQuery, CommandComplete, ErrorResponse) and builders for the ones
//! Postern emits to its clients.

use bytes::{BufMut, BytesMut};

use crate::cursor::Cursor;
use crate::startup::{patch_length, put_cstr};
use crate::{Frame, WireError};

pub const AUTHENTICATION: u8 = b'R';
pub const BACKEND_KEY_DATA: u8 = b'K';
pub const BIND_COMPLETE: u8 = b'2';
pub const CLOSE_COMPLETE: u8 = b'3';
pub const COMMAND_COMPLETE: u8 = b'C';
pub const COPY_IN_RESPONSE: u8 = b'G';
pub const COPY_OUT_RESPONSE: u8 = b'H';
pub const COPY_BOTH_RESPONSE: u8 = b'W';
pub const DATA_ROW: u8 = b'D';
pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
pub const ERROR_RESPONSE: u8 = b'E';
pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
pub const NOTICE_RESPONSE: u8 = b'N';
pub const PARAMETER_STATUS: u8 = b'S';
pub const PARSE_COMPLETE: u8 = b'1';
pub const PORTAL_SUSPENDED: u8 = b's';
pub const READY_FOR_QUERY: u8 = b'Z';

/// An authentication request from a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication<'a> {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    Sasl {
        mechanisms: Vec<&'a str>,
    },
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    /// Kerberos, GSS, SSPI: methods Postern does not use towards a database.
    Unsupported(i32),
}

pub fn authentication(frame: &Frame) -> Result<Authentication<'_>, WireError> {
    let mut cursor = Cursor::new(frame.body(), "authentication request");
    let code = cursor.i32()?;
    Ok(match code {
        0 => Authentication::Ok,
        3 => Authentication::CleartextPassword,
        5 => {
            let salt = cursor.bytes(4)?;
            Authentication::Md5Password {
                salt: [salt[0], salt[1], salt[2], salt[3]],
            }
        }
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let mechanism = cursor.cstr()?;
                if mechanism.is_empty() {
                    break;
                }
                mechanisms.push(mechanism);
            }
            Authentication::Sasl { mechanisms }
        }
        11 => Authentication::SaslContinue(cursor.remaining()),
        12 => Authentication::SaslFinal(cursor.remaining()),
        other => Authentication::Unsupported(other),
    })
}

/// BackendKeyData: the key a client needs to cancel this backend's queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendKeyData {
    pub process_id: i32,
    pub secret_key: i32,
}

pub fn backend_key_data(frame: &Frame) -> Result<BackendKeyData, WireError> {
    let mut cursor = Cursor::new(frame.body(), "BackendKeyData");
    Ok(BackendKeyData {
        process_id: cursor.i32()?,
        secret_key: cursor.i32()?,
    })
}

/// ParameterStatus: a run-time setting the server reports.
pub fn parameter_status(frame: &Frame) -> Result<(&str, &str), WireError> {
    let mut cursor = Cursor::new(frame.body(), "ParameterStatus");
    Ok((cursor.cstr()?, cursor.cstr()?))
}

/// Transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TransactionStatus {
    pub fn as_byte(self) -> u8 {
        match self {
            Self::Idle => b'I',
            Self::InTransaction => b'T',
            Self::Failed => b'E',
        }
    }
}

pub fn ready_for_query(frame: &Frame) -> Result<TransactionStatus, WireError> {
    match frame.body() {
        b"I" => Ok(TransactionStatus::Idle),
        b"T" => Ok(TransactionStatus::InTransaction),
        b"E" => Ok(TransactionStatus::Failed),
        _ => Err(WireError::Malformed {
            what: "ReadyForQuery",
            why: "unknown status",
        }),
    }
}

/// The command tag of a CommandComplete, e.g. `INSERT 0 3`.
pub fn command_tag(frame: &Frame) -> Result<&str, WireError> {
    Cursor::new(frame.body(), "CommandComplete").cstr()
}

/// The column values of a DataRow, `None` for SQL NULL.
pub fn data_row(frame: &Frame) -> Result<Vec<Option<&[u8]>>, WireError> {
    let mut cursor = Cursor::new(frame.body(), "DataRow");
    let count = cursor.i16()?;
    let count = usize::try_from(count).map_err(|_| WireError::Malformed {
        what: "DataRow",
        why: "negative column count",
    })?;
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        let length = cursor.i32()?;
        if length < 0 {
            values.push(None);
        } else {
            let length = usize::try_from(length).map_err(|_| WireError::Malformed {
                what: "DataRow",
                why: "bad column length",
            })?;
            values.push(Some(cursor.bytes(length)?));
        }
    }
    Ok(values)
}

/// The fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// Non-localised severity (`V`), else localised (`S`).
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

pub fn error_fields(frame: &Frame) -> Result<ErrorFields, WireError> {
    let mut cursor = Cursor::new(frame.body(), "ErrorResponse");
    let mut fields = ErrorFields::default();
    loop {
        let kind = cursor.u8()?;
        if kind == 0 {
            break;
        }
        let value = cursor.cstr()?;
        match kind {
            b'V' => value.clone_into(&mut fields.severity),
            b'S' if fields.severity.is_empty() => value.clone_into(&mut fields.severity),
            b'C' => value.clone_into(&mut fields.code),
            b'M' => value.clone_into(&mut fields.message),
            b'D' => fields.detail = Some(value.to_owned()),
            b'H' => fields.hint = Some(value.to_owned()),
            _ => {}
        }
    }
    Ok(fields)
}

/// Severity of a message Postern emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Notice,
    Warning,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Fatal => "FATAL",
            Self::Notice => "NOTICE",
            Self::Warning => "WARNING",
        }
    }
}

/// An ErrorResponse or NoticeResponse to emit.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    pub severity: Severity,
    pub code: &'a str,
    pub message: &'a str,
    pub detail: Option<&'a str>,
    pub hint: Option<&'a str>,
}

impl<'a> Report<'a> {
    pub fn new(severity: Severity, code: &'a str, message: &'a str) -> Self {
        Self {
            severity,
            code,
            message,
            detail: None,
            hint: None,
        }
    }

    #[must_use]
    pub fn detail(mut self, detail: &'a str) -> Self {
        self.detail = Some(detail);
        self
    }

    #[must_use]
    pub fn hint(mut self, hint: &'a str) -> Self {
        self.hint = Some(hint);
        self
    }

    /// Encodes as ErrorResponse (Error, Fatal) or NoticeResponse (Notice, Warning).
    pub fn encode(&self, out: &mut BytesMut) {
        let tag = match self.severity {
            Severity::Error | Severity::Fatal => ERROR_RESPONSE,
            Severity::Notice | Severity::Warning => NOTICE_RESPONSE,
        };
        let start = begin(out, tag);
        for (kind, value) in [
            (b'S', Some(self.severity.as_str())),
            (b'V', Some(self.severity.as_str())),
            (b'C', Some(self.code)),
            (b'M', Some(self.message)),
            (b'D', self.detail),
            (b'H', self.hint),
        ] {
            if let Some(value) = value {
                out.put_u8(kind);
                put_cstr(out, value);
            }
        }
        out.put_u8(0);
        patch_length(out, start);
    }
}

fn begin(out: &mut BytesMut, tag: u8) -> usize {
    out.put_u8(tag);
    let start = out.len();
    out.put_i32(0);
    start
}

/// AuthenticationOk.
pub fn encode_authentication_ok(out: &mut BytesMut) {
    let start = begin(out, AUTHENTICATION);
    out.put_i32(0);
    patch_length(out, start);
}

/// AuthenticationCleartextPassword: asks the client for its password — for Postern, its token.
pub fn encode_authentication_cleartext_password(out: &mut BytesMut) {
    let start = begin(out, AUTHENTICATION);
    out.put_i32(3);
    patch_length(out, start);
}

/// AuthenticationSASL: the SASL mechanisms the server offers, in order of preference
/// (<https://www.postgresql.org/docs/current/protocol-message-formats.html>, `R` with code 10).
pub fn encode_authentication_sasl(mechanisms: &[&str], out: &mut BytesMut) {
    let start = begin(out, AUTHENTICATION);
    out.put_i32(10);
    for mechanism in mechanisms {
        put_cstr(out, mechanism);
    }
    out.put_u8(0);
    patch_length(out, start);
}

/// AuthenticationSASLContinue: the mechanism's challenge (code 11), as opaque bytes.
pub fn encode_authentication_sasl_continue(data: &[u8], out: &mut BytesMut) {
    let start = begin(out, AUTHENTICATION);
    out.put_i32(11);
    out.put_slice(data);
    patch_length(out, start);
}

/// AuthenticationSASLFinal: the mechanism's additional data on success (code 12), as opaque
/// bytes. AuthenticationOk still follows it.
pub fn encode_authentication_sasl_final(data: &[u8], out: &mut BytesMut) {
    let start = begin(out, AUTHENTICATION);
    out.put_i32(12);
    out.put_slice(data);
    patch_length(out, start);
}

pub fn encode_backend_key_data(key: BackendKeyData, out: &mut BytesMut) {
    let start = begin(out, BACKEND_KEY_DATA);
    out.put_i32(key.process_id);
    out.put_i32(key.secret_key);
    patch_length(out, start);
}

pub fn encode_parameter_status(name: &str, value: &str, out: &mut BytesMut) {
    let start = begin(out, PARAMETER_STATUS);
    put_cstr(out, name);
    put_cstr(out, value);
    patch_length(out, start);
}

pub fn encode_ready_for_query(status: TransactionStatus, out: &mut BytesMut) {
    let start = begin(out, READY_FOR_QUERY);
    out.put_u8(status.as_byte());
    patch_length(out, start);
}

/// NegotiateProtocolVersion: the newest protocol version supported for major version 3 and the
/// `_pq_` options that were not recognised.
///
/// The documentation calls the first field the "newest minor protocol version", but PostgreSQL
/// sends, and libpq expects, the whole version number (`3 << 16 | minor`): libpq rejects a value
/// below 3.0 as "server only supports protocol version 0.x".
pub fn encode_negotiate_protocol_version(minor: u16, unrecognised: &[&str], out: &mut BytesMut) {
    let start = begin(out, NEGOTIATE_PROTOCOL_VERSION);
    out.put_i32((i32::from(crate::startup::PROTOCOL_MAJOR) << 16) | i32::from(minor));
    out.put_i32(i32::try_from(unrecognised.len()).unwrap_or(i32::MAX));
    for option in unrecognised {
        put_cstr(out, option);
    }
    patch_length(out, start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FrameDecoder;
    use crate::frame::Side;

    fn decode(mut buf: BytesMut) -> Frame {
        FrameDecoder::new(Side::Backend, 1 << 20)
            .decode(&mut buf)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn error_report_round_trip() {
        let mut buf = BytesMut::new();
        Report::new(
            Severity::Fatal,
            "28P01",
            "token expired at 2026-11-22T10:00:00Z",
        )
        .hint("log in again")
        .encode(&mut buf);
        let fields = error_fields(&decode(buf)).unwrap();
        assert_eq!(fields.severity, "FATAL");
        assert_eq!(fields.code, "28P01");
        assert_eq!(fields.message, "token expired at 2026-11-22T10:00:00Z");
        assert_eq!(fields.hint.as_deref(), Some("log in again"));
    }

    #[test]
    fn ready_and_key_data_round_trip() {
        let mut buf = BytesMut::new();
        encode_ready_for_query(TransactionStatus::Failed, &mut buf);
        assert_eq!(
            ready_for_query(&decode(buf)).unwrap(),
            TransactionStatus::Failed
        );
        let mut buf = BytesMut::new();
        let key = BackendKeyData {
            process_id: 42,
            secret_key: -9,
        };
        encode_backend_key_data(key, &mut buf);
        assert_eq!(backend_key_data(&decode(buf)).unwrap(), key);
    }

    #[test]
    fn authentication_requests() {
        let mut buf = BytesMut::new();
        let start = begin(&mut buf, AUTHENTICATION);
        buf.put_i32(10);
        buf.put_slice(b"SCRAM-SHA-256\0SCRAM-SHA-256-PLUS\0\0");
        patch_length(&mut buf, start);
        assert_eq!(
            authentication(&decode(buf)).unwrap(),
            Authentication::Sasl {
                mechanisms: vec!["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"]
            }
        );
        let mut buf = BytesMut::new();
        encode_authentication_sasl(&["OAUTHBEARER"], &mut buf);
        assert_eq!(&buf[..], b"R\0\0\0\x15\0\0\0\x0aOAUTHBEARER\0\0");
        assert_eq!(
            authentication(&decode(buf)).unwrap(),
            Authentication::Sasl {
                mechanisms: vec!["OAUTHBEARER"]
            }
        );
        let mut buf = BytesMut::new();
        encode_authentication_sasl_continue(b"{\"status\":\"invalid_token\"}", &mut buf);
        assert_eq!(
            authentication(&decode(buf)).unwrap(),
            Authentication::SaslContinue(b"{\"status\":\"invalid_token\"}")
        );
        let mut buf = BytesMut::new();
        encode_authentication_sasl_final(b"", &mut buf);
        assert_eq!(&buf[..], b"R\0\0\0\x08\0\0\0\x0c");
        assert_eq!(
            authentication(&decode(buf)).unwrap(),
            Authentication::SaslFinal(b"")
        );
        let mut buf = BytesMut::new();
        let start = begin(&mut buf, AUTHENTICATION);
        buf.put_i32(5);
        buf.put_slice(&[1, 2]);
        patch_length(&mut buf, start);
        assert!(authentication(&decode(buf)).is_err());
    }
}
