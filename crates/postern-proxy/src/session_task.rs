//! A logged-in client's session, run as a task of its own: the relay until the session ends,
//! then its server connection given back and its end recorded. The handshake's task ends when
//! this one starts: a task's future is allocated whole for the task's life, and an idle session
//! should hold only what its relay needs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::Shared;
use crate::events;
use crate::io::BoxedStream;
use crate::session::{self, SessionContext};
use crate::target::SessionLease;
use crate::upstream::Upstream;

/// A client logged in and told so: what its relay needs, and what recording its end needs.
pub struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: SocketAddr,
    pub(crate) client: BoxedStream,
    /// The client's read buffer, with any bytes read and not yet used.
    pub(crate) buffer: BytesMut,
    pub(crate) link: Link,
    pub(crate) context: SessionContext,
    /// Held until the relay ends: the client's cancel key and the registry entry.
    pub(crate) cancel: crate::cancel::CancelKey,
    pub(crate) registered: crate::registry::Registered,
}

/// How a session reaches its server connection.
pub(crate) enum Link {
    /// Transaction pooling: through the link task, which takes a server connection per
    /// transaction.
    PerTransaction(tokio::io::DuplexStream),
    /// Session pooling (or none): one server connection, the session's own until it ends.
    /// Boxed: a transaction-pooled session should not carry the room for it.
    Held(Box<(Upstream, SessionLease)>),
}

impl Session {
    /// Runs the relay until the session ends, gives back its server connection, and records
    /// the end. `permit` is the session's place under `listen.max_connections`, held until then.
    pub async fn run(self, permit: tokio::sync::OwnedSemaphorePermit) {
        // Fields are used in place, never bound to locals: an async fn's argument is stored in
        // its future for the whole call, and a local moved out of it would be a second copy.
        let started = Instant::now();
        let mut statements = 0;
        let (end, mut client, held) = match self.link {
            Link::PerTransaction(pipe) => {
                let (end, client, _) = session::relay(
                    &self.context,
                    self.client,
                    self.buffer,
                    pipe,
                    BytesMut::new(),
                    &mut statements,
                    &self.shared.shutdown,
                )
                .await;
                (end, client, None)
            }
            Link::Held(held) => {
                let (upstream, lease) = *held;
                let Upstream {
                    stream: upstream_stream,
                    buffer: upstream_buffer,
                    parameters: upstream_parameters,
                    key: upstream_key,
                    statements: upstream_statements,
                } = upstream;
                let (end, client, reusable) = session::relay(
                    &self.context,
                    self.client,
                    self.buffer,
                    upstream_stream,
                    upstream_buffer,
                    &mut statements,
                    &self.shared.shutdown,
                )
                .await;
                let reusable = reusable.map(|(stream, buffer)| Upstream {
                    stream,
                    buffer,
                    parameters: upstream_parameters,
                    key: upstream_key,
                    statements: upstream_statements,
                });
                (end, client, Some((lease, reusable)))
            }
        };
        drop(self.cancel);
        drop(self.registered);
        if let Some((lease, reusable)) = held {
            lease.release(reusable);
        }
        let (shared, peer, context) = (&self.shared, self.peer, &self.context);
        if let Some(detail) = end.detail() {
            tracing::warn!(client = %peer, reason = end.label(), detail, "session ended abnormally");
        }
        let _ = client.shutdown().await;
        let end_label = end.label();
        let ended_by = match &end {
            session::SessionEnd::Ended(request) => Some(request),
            _ => None,
        };
        let event = events::session_end(
            &context.base_event,
            statements,
            started.elapsed(),
            end_label,
            ended_by,
        );
        if let Err(error) = shared.audit.record_detached(event) {
            tracing::error!(error = %error, "audit log: cannot record a session's end");
        }
        tracing::info!(client = %peer, subject = %context.policy.identity.subject, reason = end_label, "session ended");
        drop(permit);
    }
}
