//! Framing of the typed messages that follow startup: a type byte, a 32-bit length that counts
//! itself, then the body. Frames keep their raw bytes so that relaying one costs a reference
//! count, not a copy or a re-encoding.

use bytes::{Bytes, BytesMut};

use crate::WireError;

/// Which peer a decoder reads from; decides the set of message types that are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Messages a client sends.
    Frontend,
    /// Messages a server sends.
    Backend,
}

/// One complete message, header included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    raw: Bytes,
}

impl Frame {
    /// The message type byte.
    pub fn tag(&self) -> u8 {
        self.raw[0]
    }

    /// The body after the type byte and length.
    pub fn body(&self) -> &[u8] {
        &self.raw[5..]
    }

    /// The whole message as it came off the wire, for relaying.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// Consumes the frame, giving its raw bytes.
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// Wraps bytes that are known to hold exactly one well-formed message (built by this crate).
    pub(crate) fn from_raw(raw: Bytes) -> Self {
        Self { raw }
    }
}

/// Splits a byte stream into frames. Check-then-parse: the header is examined as soon as five
/// bytes are present, so an invalid type or an absurd length is refused before anything is
/// buffered for it.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    side: Side,
    max_length: usize,
}

impl FrameDecoder {
    pub fn new(side: Side, max_length: usize) -> Self {
        Self { side, max_length }
    }

    /// Changes the bound, e.g. lifting the authentication-phase limit once a client is in.
    pub fn set_max_length(&mut self, max_length: usize) {
        self.max_length = max_length;
    }

    /// Takes one complete frame off the front of `buf`, or returns `None` if more bytes are
    /// needed. Cancel safe: nothing is consumed until a whole frame is present.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        if buf.len() < 5 {
            return Ok(None);
        }
        let tag = buf[0];
        if !is_known(self.side, tag) {
            let side = match self.side {
                Side::Frontend => "frontend",
                Side::Backend => "backend",
            };
            return Err(WireError::UnknownMessageType { side, tag });
        }
        let raw_length = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        let length = usize::try_from(raw_length).ok().filter(|&n| n >= 4).ok_or(
            WireError::InvalidLength {
                what: "message",
                length: raw_length.into(),
            },
        )?;
        if length > self.max_length {
            return Err(WireError::TooLong {
                what: "message",
                length,
                limit: self.max_length,
            });
        }
        let total = length + 1;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        Ok(Some(Frame {
            raw: buf.split_to(total).freeze(),
        }))
    }
}

/// Message types each side may send in protocol 3.0
/// (<https://www.postgresql.org/docs/current/protocol-message-formats.html>).
fn is_known(side: Side, tag: u8) -> bool {
    match side {
        // Bind, Close, CopyData, CopyDone, Describe, Execute, CopyFail, FunctionCall, Flush,
        // Parse, Password/SASL, Query, Sync, Terminate.
        Side::Frontend => b"BCdcDEfFHPpQSX".contains(&tag),
        // Every backend message, including NegotiateProtocolVersion ('v').
        Side::Backend => b"RKSZTDCEINn123tsGHWdcAVv".contains(&tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn message(tag: u8, body: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u8(tag);
        buf.put_i32(i32::try_from(body.len() + 4).unwrap());
        buf.put_slice(body);
        buf
    }

    #[test]
    fn pipelined_frames_split_exactly() {
        let mut buf = message(b'Q', b"SELECT 1\0");
        buf.extend_from_slice(&message(b'S', b""));
        buf.extend_from_slice(&message(b'X', b"")[..3]);
        let decoder = FrameDecoder::new(Side::Frontend, 1024);
        let first = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(first.tag(), b'Q');
        assert_eq!(first.body(), b"SELECT 1\0");
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().tag(), b'S');
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn hostile_headers_are_refused_at_once() {
        let decoder = FrameDecoder::new(Side::Frontend, 1024);
        let mut unknown = message(b'z', b"");
        assert!(matches!(
            decoder.decode(&mut unknown),
            Err(WireError::UnknownMessageType { tag: b'z', .. })
        ));
        for length in [-1i32, 0, 3, i32::MIN] {
            let mut buf = BytesMut::new();
            buf.put_u8(b'Q');
            buf.put_i32(length);
            assert!(decoder.decode(&mut buf).is_err(), "{length}");
        }
        let mut big = BytesMut::new();
        big.put_u8(b'Q');
        big.put_i32(2048);
        assert!(matches!(
            decoder.decode(&mut big),
            Err(WireError::TooLong { .. })
        ));
    }

    #[test]
    fn backend_accepts_backend_types_only() {
        let decoder = FrameDecoder::new(Side::Backend, 1024);
        assert!(decoder.decode(&mut message(b'Z', b"I")).unwrap().is_some());
        assert!(decoder.decode(&mut message(b'Q', b"x\0")).is_err());
    }
}
