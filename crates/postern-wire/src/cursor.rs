//! A bounds-checked reader over a message body. Every read that would pass the end fails.

use crate::WireError;

pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    fn short(&self) -> WireError {
        WireError::Malformed {
            what: self.what,
            why: "message ends early",
        }
    }

    pub(crate) fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        let (&first, rest) = self.buf.split_first().ok_or_else(|| self.short())?;
        self.buf = rest;
        Ok(first)
    }

    pub(crate) fn i16(&mut self) -> Result<i16, WireError> {
        let bytes = self.bytes(2)?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, WireError> {
        let bytes = self.bytes(4)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(self.short());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A NUL-terminated string's bytes, in whatever encoding the client uses.
    pub(crate) fn cstr_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(WireError::Malformed {
                what: self.what,
                why: "string is not NUL-terminated",
            })?;
        let (text, rest) = self.buf.split_at(end);
        self.buf = &rest[1..];
        Ok(text)
    }

    /// A NUL-terminated string, which must be UTF-8.
    pub(crate) fn cstr(&mut self) -> Result<&'a str, WireError> {
        let what = self.what;
        std::str::from_utf8(self.cstr_bytes()?).map_err(|_| WireError::Malformed {
            what,
            why: "string is not UTF-8",
        })
    }
}
