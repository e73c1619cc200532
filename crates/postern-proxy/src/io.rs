//! The byte streams a session runs over, plain or TLS, behind one type so the session code does
//! not care which.

use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream: TCP, or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// A stream whose concrete type was decided at connect time.
pub type BoxedStream = Box<dyn Stream>;
