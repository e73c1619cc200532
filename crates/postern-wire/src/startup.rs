//! The first packet of a connection, which has no type byte: a StartupMessage, or one of the
//! special requests distinguished by a magic protocol code.
//! See <https://www.postgresql.org/docs/current/protocol-message-formats.html>.

use bytes::{BufMut, BytesMut};

use crate::WireError;
use crate::cursor::Cursor;
use crate::limits::{MAX_STARTUP_PACKET_LENGTH, MAX_STARTUP_PARAMETERS};

/// `CancelRequest` code: 1234 in the high 16 bits, 5678 in the low.
pub const CANCEL_REQUEST_CODE: i32 = (1234 << 16) | 5678;
/// `SSLRequest` code.
pub const SSL_REQUEST_CODE: i32 = (1234 << 16) | 5679;
/// `GSSENCRequest` code.
pub const GSSENC_REQUEST_CODE: i32 = (1234 << 16) | 5680;
/// Protocol 3.0, the only major version in use since PostgreSQL 7.4.
pub const PROTOCOL_MAJOR: u16 = 3;
/// The newest minor version Postern speaks; PostgreSQL 15 speaks 3.0 too.
pub const PROTOCOL_MINOR: u16 = 0;

/// The decoded first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    Startup(StartupMessage),
    SslRequest,
    GssEncRequest,
    Cancel(CancelRequest),
}

/// A StartupMessage: protocol version and the parameters in the order the client sent them.
/// Duplicates are kept so that policy can refuse them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub major: u16,
    pub minor: u16,
    pub parameters: Vec<(String, String)>,
}

impl StartupMessage {
    /// The first value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A CancelRequest names a backend by process id and secret key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelRequest {
    pub process_id: i32,
    pub secret_key: i32,
}

/// Decodes one startup packet from the front of `buf`, or returns `None` when more bytes are
/// needed. The length is checked before waiting for the body, so a client announcing a huge
/// packet is refused at once rather than read.
pub fn decode_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let raw_length = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let length =
        usize::try_from(raw_length)
            .ok()
            .filter(|&n| n >= 8)
            .ok_or(WireError::InvalidLength {
                what: "startup packet",
                length: raw_length.into(),
            })?;
    if length > MAX_STARTUP_PACKET_LENGTH {
        return Err(WireError::TooLong {
            what: "startup packet",
            length,
            limit: MAX_STARTUP_PACKET_LENGTH,
        });
    }
    if buf.len() < length {
        return Ok(None);
    }
    let packet = buf.split_to(length).freeze();
    let mut cursor = Cursor::new(&packet[4..], "startup packet");
    let code = cursor.i32()?;
    let fixed = |packet: StartupPacket, cursor: &Cursor<'_>| {
        if cursor.is_empty() {
            Ok(Some(packet))
        } else {
            Err(WireError::Malformed {
                what: "startup packet",
                why: "unexpected trailing bytes",
            })
        }
    };
    match code {
        SSL_REQUEST_CODE => fixed(StartupPacket::SslRequest, &cursor),
        GSSENC_REQUEST_CODE => fixed(StartupPacket::GssEncRequest, &cursor),
        CANCEL_REQUEST_CODE => {
            let process_id = cursor.i32()?;
            let secret_key = cursor.i32()?;
            fixed(
                StartupPacket::Cancel(CancelRequest {
                    process_id,
                    secret_key,
                }),
                &cursor,
            )
        }
        _ => {
            let major = u16::try_from(code >> 16).unwrap_or(0);
            let minor = u16::try_from(code & 0xffff).unwrap_or(0);
            if major != PROTOCOL_MAJOR {
                return Err(WireError::UnsupportedProtocol { major, minor });
            }
            let parameters = decode_parameters(&mut cursor)?;
            Ok(Some(StartupPacket::Startup(StartupMessage {
                major,
                minor,
                parameters,
            })))
        }
    }
}

fn decode_parameters(cursor: &mut Cursor<'_>) -> Result<Vec<(String, String)>, WireError> {
    let mut parameters = Vec::new();
    loop {
        let key = cursor.cstr()?;
        if key.is_empty() {
            break;
        }
        let value = cursor.cstr()?;
        if parameters.len() == MAX_STARTUP_PARAMETERS {
            return Err(WireError::Malformed {
                what: "startup packet",
                why: "too many parameters",
            });
        }
        parameters.push((key.to_owned(), value.to_owned()));
    }
    if !cursor.is_empty() {
        return Err(WireError::Malformed {
            what: "startup packet",
            why: "bytes after the parameter list",
        });
    }
    Ok(parameters)
}

/// Encodes a StartupMessage (protocol 3.0) with the given parameters, as sent upstream.
pub fn encode_startup(parameters: &[(&str, &str)], out: &mut BytesMut) {
    let start = out.len();
    out.put_i32(0);
    out.put_i32(i32::from(PROTOCOL_MAJOR) << 16 | i32::from(PROTOCOL_MINOR));
    for (key, value) in parameters {
        put_cstr(out, key);
        put_cstr(out, value);
    }
    out.put_u8(0);
    patch_length(out, start);
}

/// Encodes a CancelRequest, as sent to the upstream server.
pub fn encode_cancel(request: CancelRequest, out: &mut BytesMut) {
    out.put_i32(16);
    out.put_i32(CANCEL_REQUEST_CODE);
    out.put_i32(request.process_id);
    out.put_i32(request.secret_key);
}

/// Encodes an SSLRequest, as sent to the upstream server.
pub fn encode_ssl_request(out: &mut BytesMut) {
    out.put_i32(8);
    out.put_i32(SSL_REQUEST_CODE);
}

pub(crate) fn put_cstr(out: &mut BytesMut, s: &str) {
    // A NUL inside would split the string on the receiving side; callers never pass one, but
    // cut there rather than emit something the peer would misread.
    let bytes = s.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    out.put_slice(&bytes[..end]);
    out.put_u8(0);
}

/// Writes the length of the message that starts at `start` (its length field included).
pub(crate) fn patch_length(out: &mut BytesMut, start: usize) {
    let length = i32::try_from(out.len() - start).unwrap_or(i32::MAX);
    out[start..start + 4].copy_from_slice(&length.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(body: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_i32(i32::try_from(body.len() + 4).unwrap());
        buf.put_slice(body);
        buf
    }

    #[test]
    fn startup_round_trip() {
        let mut buf = BytesMut::new();
        encode_startup(&[("user", "reader"), ("database", "demo")], &mut buf);
        let decoded = decode_startup(&mut buf).unwrap().unwrap();
        let StartupPacket::Startup(msg) = decoded else {
            panic!("{decoded:?}")
        };
        assert_eq!(msg.get("user"), Some("reader"));
        assert_eq!(msg.get("database"), Some("demo"));
        assert!(buf.is_empty());
    }

    #[test]
    fn special_requests() {
        let mut buf = BytesMut::new();
        encode_ssl_request(&mut buf);
        assert_eq!(
            decode_startup(&mut buf).unwrap(),
            Some(StartupPacket::SslRequest)
        );
        encode_cancel(
            CancelRequest {
                process_id: 7,
                secret_key: -3,
            },
            &mut buf,
        );
        assert_eq!(
            decode_startup(&mut buf).unwrap(),
            Some(StartupPacket::Cancel(CancelRequest {
                process_id: 7,
                secret_key: -3
            }))
        );
        let mut gss = packet(&GSSENC_REQUEST_CODE.to_be_bytes());
        assert_eq!(
            decode_startup(&mut gss).unwrap(),
            Some(StartupPacket::GssEncRequest)
        );
    }

    #[test]
    fn partial_packets_wait() {
        let mut full = BytesMut::new();
        encode_startup(&[("user", "u")], &mut full);
        for cut in 0..full.len() {
            let mut partial = BytesMut::from(&full[..cut]);
            assert_eq!(decode_startup(&mut partial).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn hostile_lengths_are_refused_before_reading() {
        for length in [i32::MIN, -1, 0, 3, 7] {
            let mut buf = BytesMut::new();
            buf.put_i32(length);
            assert!(
                matches!(
                    decode_startup(&mut buf),
                    Err(WireError::InvalidLength { .. })
                ),
                "{length}"
            );
        }
        let mut huge = BytesMut::new();
        huge.put_i32(10_001);
        assert!(matches!(
            decode_startup(&mut huge),
            Err(WireError::TooLong { .. })
        ));
    }

    #[test]
    fn malformed_bodies() {
        let mut version = (3i32 << 16).to_be_bytes().to_vec();
        version.extend_from_slice(b"user\0no-terminator");
        assert!(decode_startup(&mut packet(&version)).is_err());
        let mut wrong_major = (2i32 << 16).to_be_bytes().to_vec();
        wrong_major.push(0);
        assert!(matches!(
            decode_startup(&mut packet(&wrong_major)),
            Err(WireError::UnsupportedProtocol { major: 2, .. })
        ));
        let mut trailing = SSL_REQUEST_CODE.to_be_bytes().to_vec();
        trailing.push(1);
        assert!(decode_startup(&mut packet(&trailing)).is_err());
        let mut bad_utf8 = (3i32 << 16).to_be_bytes().to_vec();
        bad_utf8.extend_from_slice(b"user\0\xff\xfe\0\0");
        assert!(decode_startup(&mut packet(&bad_utf8)).is_err());
    }

    #[test]
    fn duplicate_parameters_are_kept_for_policy() {
        let mut buf = BytesMut::new();
        encode_startup(&[("user", "a"), ("user", "b")], &mut buf);
        let Some(StartupPacket::Startup(msg)) = decode_startup(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!(msg.parameters.len(), 2);
    }
}
