//! One client connection from its first byte to a session ready to run (`session_task`): TLS
//! negotiation, the startup packet, the token (or the client certificate verified in the TLS
//! handshake, which stands in for it), role mapping, the upstream login, and the refusals on the
//! way, each sent as a FATAL ErrorResponse the user can act on and recorded in the audit log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;
use postern_config::{ClientAuth, OAuthBearerSettings, UpstreamMode};
use postern_identity::Identity;
use postern_policy::cedar::{Decision, RequestContext};
use postern_policy::startup::check_startup_parameters;
use postern_wire::backend::{self, Report, Severity, TransactionStatus};
use postern_wire::frame::Side;
use postern_wire::startup::{self, StartupMessage, StartupPacket};
use postern_wire::{Frame, FrameDecoder, frontend, limits, sqlstate};
use rustls_pki_types::CertificateDer;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Shared;
use crate::cancel::BackendSlot;
use crate::error::{Refused, UpstreamError};
use crate::events;
use crate::io::BoxedStream;
use crate::oauthbearer::{self, ClientResponse};
use crate::session::{self, SessionContext};
use crate::session_task::{Link, Session};
use crate::target::{SessionLease, Target, random_hex};
use crate::upstream::{self, Upstream, quote_ident, quote_literal};

/// Takes one accepted TCP connection through its handshake to a session ready to run, or to its
/// refusal (`None`). The session runs as a task of its own ([`Session::run`]): the future of a
/// task is allocated whole for the task's life, and an idle session should hold only what its
/// relay needs, not the handshake's state as well.
pub async fn serve(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) -> Option<Session> {
    let _ = tcp.set_nodelay(true);
    let mut conn = Connection {
        shared: shared.clone(),
        stream: Box::new(tcp),
        // Grown as messages need; an idle session keeps whatever it holds, and most sessions
        // are idle most of the time.
        buffer: BytesMut::with_capacity(1024),
        peer,
        tls: false,
        client_certificate: None,
        base_event: Map::new(),
    };
    let timeout = shared.listen.handshake_timeout;
    let shutdown = shared.shutdown.clone();
    let started = tokio::select! {
        started = tokio::time::timeout(timeout, conn.handshake()) => started,
        () = shutdown.cancelled() => {
            let refused = Refused::new(
                sqlstate::ADMIN_SHUTDOWN,
                "shutdown",
                "Postern is shutting down",
            );
            conn.refuse(&refused).await;
            return None;
        }
    };
    let ready = match started {
        Ok(Ok(Some(ready))) => ready,
        // A cancel request, or a client that left before giving its token.
        Ok(Ok(None)) => return None,
        Ok(Err(refused)) => {
            conn.refuse(&refused).await;
            return None;
        }
        Err(_) => {
            let refused = Refused::new(
                sqlstate::PROTOCOL_VIOLATION,
                "handshake_timeout",
                format!(
                    "the connection was not completed within {}s",
                    timeout.as_secs()
                ),
            );
            conn.refuse(&refused).await;
            return None;
        }
    };
    conn.open_session(ready).await
}

/// Bytes a session's client read buffer starts with: a short statement's messages fit.
const SESSION_READ_BUFFER: usize = 256;

struct Connection {
    shared: Arc<Shared>,
    stream: BoxedStream,
    buffer: BytesMut,
    peer: SocketAddr,
    tls: bool,
    /// The end-entity certificate the client presented in the TLS handshake, verified there
    /// against `[listen.tls] client_ca`.
    client_certificate: Option<CertificateDer<'static>>,
    /// Audit fields known so far; a refusal is recorded with whatever is known.
    base_event: Map<String, Value>,
}

/// Everything a session needs once the client is in.
struct Ready {
    session_id: String,
    /// Shared with the session's policy context, its registry entry and its link (and, for a
    /// token verified before, with every session that token opened): one copy of the claims.
    identity: Arc<Identity>,
    /// The request as policy sees it; statements are decided with a fresh `now`.
    request: RequestContext,
    target: Arc<Target>,
    upstream: Upstream,
    cancel: crate::cancel::CancelKey,
    /// Where the session's statements run: fixed, or set per transaction.
    backend: BackendSlot,
    /// The client's startup parameters as forwarded upstream (they choose the pool).
    parameters: Vec<(String, String)>,
    /// Held until the session ends (in `ephemeral_user` mode, the identity's login role).
    lease: SessionLease,
}

impl Connection {
    /// Runs the startup exchange. `Ok(None)` means the connection ends quietly (a cancel
    /// request, a probe that closed at the password prompt).
    async fn handshake(&mut self) -> Result<Option<Ready>, Refused> {
        let Some(startup) = self.read_startup().await? else {
            return Ok(None);
        };
        let session_id = random_hex(8);
        self.base_event = events::connection_base(&session_id, self.peer, self.tls);
        let check = check_startup_parameters(&startup.parameters).map_err(|r| {
            Refused::new(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                r.reason.label(),
                r.message,
            )
        })?;
        let application_name = check
            .forwarded
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("application_name"))
            .map(|(_, v)| v.clone());
        let role = check.user.clone().ok_or_else(|| {
            Refused::new(
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                "no_user",
                "no user name given: set the user to the database role you want to use",
            )
        })?;
        let database = check.database.clone().unwrap_or_else(|| role.clone());
        events::add_request(
            &mut self.base_event,
            Some(&database),
            Some(&role),
            application_name.as_deref(),
        );

        if startup.minor > startup::PROTOCOL_MINOR || !check.protocol_options.is_empty() {
            let options: Vec<&str> = check.protocol_options.iter().map(String::as_str).collect();
            let mut out = BytesMut::new();
            backend::encode_negotiate_protocol_version(startup::PROTOCOL_MINOR, &options, &mut out);
            self.write(&out).await?;
        }

        let target = self.shared.targets.get(&database).cloned().ok_or_else(|| {
            Refused::new(
                sqlstate::INVALID_CATALOG_NAME,
                "unknown_target",
                format!("database \"{database}\" is not a target of this Postern"),
            )
        })?;
        self.check_transport()?;

        let Some(identity) = self.authenticate(&target.name).await? else {
            return Ok(None);
        };
        events::add_identity(&mut self.base_event, &identity);
        if let Some(revocation) = self
            .shared
            .revocations
            .covering(&identity, (self.shared.clock)())
        {
            self.shared.metrics.auth_failure("revoked");
            return Err(Refused::new(
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                "revoked",
                crate::revocations::refusal_message(&identity, &revocation),
            ));
        }
        let request = RequestContext {
            source_ip: self.peer.ip(),
            now: (self.shared.clock)(),
            target: target.name.clone(),
            role: role.clone(),
            application_name: application_name.clone(),
            search_path: search_path_of(&check.forwarded),
        };
        let policy = self.shared.policies.current();
        let session_policy = policy.session(&identity);
        if let Decision::Deny {
            message, reason, ..
        } = session_policy.decide_connect(&policy, &request)
        {
            let message = if policy.asks_for_mfa() && !identity.mfa {
                format!(
                    "{message}. Your token says no second factor was used: if a policy requires \
                     MFA, log in again with MFA (postern login --mfa)"
                )
            } else {
                message
            };
            return Err(Refused::new(
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                reason.label(),
                message,
            ));
        }
        if let Some(max) = target.config.sessions.for_role(&role).max_per_identity {
            let open = self.shared.sessions.count(|s| {
                s.target == target.name
                    && s.identity.issuer == identity.issuer
                    && s.identity.subject == identity.subject
            });
            if open >= max {
                return Err(Refused::new(
                    sqlstate::TOO_MANY_CONNECTIONS,
                    "too_many_sessions",
                    format!(
                        "{} already has {open} sessions open on target \"{}\", the most \
                         allowed: close one first",
                        identity.subject, target.name
                    ),
                ));
            }
        }
        session_policy
            .authorize_role(&policy, &request, &target.name, &role)
            .map_err(|e| {
                Refused::new(
                    sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                    "role_not_allowed",
                    e.to_string(),
                )
            })?;
        if let Some(refusal) =
            crate::control::exchange::scope_refusal(&identity, &target.name, &role)
        {
            return Err(Refused::new(
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                "token_scope",
                refusal,
            ));
        }

        let (upstream, lease) = self
            .open_upstream(&target, &role, &identity, &check.forwarded)
            .await?;
        // With transaction pooling the backend changes with every transaction; the session's
        // link keeps the slot up to date.
        let backend = if target.transaction_pooled() {
            BackendSlot::default()
        } else {
            BackendSlot::fixed(upstream.key)
        };
        let cancel = self
            .shared
            .cancels
            .register(target.endpoint.clone(), backend.clone());
        Ok(Some(Ready {
            session_id,
            identity,
            request,
            target,
            upstream,
            cancel,
            backend,
            parameters: check.forwarded.clone(),
            lease,
        }))
    }

    /// Reads packets until a StartupMessage, answering SSLRequest and GSSENCRequest and serving a
    /// CancelRequest on the way.
    async fn read_startup(&mut self) -> Result<Option<StartupMessage>, Refused> {
        loop {
            let packet = match startup::decode_startup(&mut self.buffer) {
                Ok(Some(packet)) => packet,
                Ok(None) => {
                    if self.read_more().await? == 0 {
                        return Ok(None);
                    }
                    continue;
                }
                Err(error) => {
                    tracing::warn!(client = %self.peer, error = %error, "malformed startup packet");
                    return Err(Refused::protocol(&error));
                }
            };
            match packet {
                StartupPacket::Startup(message) => return Ok(Some(message)),
                StartupPacket::Cancel(request) => {
                    self.forward_cancel(request).await;
                    return Ok(None);
                }
                StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                    // Bytes sent after the request but before the TLS handshake would be read
                    // as if they had been encrypted (CVE-2021-23214): refuse them.
                    if !self.buffer.is_empty() {
                        return Err(Refused::new(
                            sqlstate::PROTOCOL_VIOLATION,
                            "data_after_ssl_request",
                            "protocol violation: data received after an encryption request",
                        ));
                    }
                    let accept = matches!(packet, StartupPacket::SslRequest) && !self.tls;
                    let shared = self.shared.clone();
                    match (&shared.tls, accept) {
                        (Some(acceptor), true) => {
                            self.write(b"S").await?;
                            let plain = std::mem::replace(
                                &mut self.stream,
                                Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink())),
                            );
                            // The client cannot read this refusal (the TLS session never
                            // began): its message is for the audit log, and names the cause
                            // (an unknown CA, an expired client certificate, no certificate).
                            let tls = acceptor.accept(plain).await.map_err(|e| {
                                tracing::info!(client = %self.peer, error = %e, "TLS handshake failed");
                                Refused::new(
                                    sqlstate::PROTOCOL_VIOLATION,
                                    "tls_handshake",
                                    format!("TLS handshake failed: {e}"),
                                )
                            })?;
                            self.client_certificate = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(<[_]>::first)
                                .map(|certificate| certificate.clone().into_owned());
                            self.stream = Box::new(tls);
                            self.tls = true;
                        }
                        _ => self.write(b"N").await?,
                    }
                }
            }
        }
    }

    /// Tokens travel only over TLS, unless plaintext from loopback is explicitly allowed.
    fn check_transport(&self) -> Result<(), Refused> {
        let listen = &self.shared.listen;
        if self.tls || (listen.allow_plaintext_loopback && self.peer.ip().is_loopback()) {
            return Ok(());
        }
        let message = if self.shared.tls.is_some() {
            "Postern accepts tokens only over TLS: connect with sslmode=require (or verify-full)"
        } else {
            "Postern accepts tokens only over TLS, and this Postern has no TLS certificate \
             configured: plaintext is allowed only from loopback when listen.allow_plaintext_loopback is set"
        };
        Err(Refused::new(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            "tls_required",
            message,
        ))
    }

    /// Who the client is: from the client certificate verified in the TLS handshake when it
    /// presented one (nothing is asked for), else from the token asked for the way the target's
    /// `client_auth` says. `Ok(None)`: the client closed the connection instead of answering.
    async fn authenticate(&mut self, target: &str) -> Result<Option<Arc<Identity>>, Refused> {
        let shared = self.shared.clone();
        if let (Some(certificate), Some(certificates)) =
            (&self.client_certificate, &shared.certificates)
        {
            events::add_client_certificate(
                &mut self.base_event,
                &postern_identity::certificate_thumbprint(certificate),
            );
            return certificates
                .identify(certificate, SystemTime::now())
                .map(|identity| Some(Arc::new(identity)))
                .map_err(|e| {
                    shared.metrics.auth_failure(e.label());
                    Refused::new(e.sqlstate(), e.label(), e.to_string())
                });
        }
        let settings = match shared.client_auth.get(target) {
            Some(ClientAuth::OAuthBearer(settings)) => settings,
            Some(ClientAuth::Password) | None => {
                events::add_client_auth(&mut self.base_event, "password");
                let Some(token) = self.read_token().await? else {
                    return Ok(None);
                };
                return shared.verifier.verify(&token).await.map(Some).map_err(|e| {
                    shared.metrics.auth_failure(e.label());
                    Refused::new(e.sqlstate(), e.label(), e.to_string())
                });
            }
        };
        events::add_client_auth(&mut self.base_event, "oauthbearer");
        self.read_oauthbearer(settings).await
    }

    /// Runs the SASL OAUTHBEARER exchange (see `oauthbearer.rs`) and verifies the bearer token.
    /// Every failure ends as PostgreSQL's does, with FATAL 28000 — after the RFC 7628 error
    /// result when the fault is the token (or its absence), at once when it is the protocol.
    async fn read_oauthbearer(
        &mut self,
        settings: &OAuthBearerSettings,
    ) -> Result<Option<Arc<Identity>>, Refused> {
        let mut out = BytesMut::new();
        backend::encode_authentication_sasl(&[oauthbearer::MECHANISM], &mut out);
        self.write(&out).await?;
        let Some(frame) = self.read_auth_frame().await? else {
            tracing::info!(
                client = %self.peer,
                "client closed the connection when asked for OAUTHBEARER (one without PostgreSQL \
                 18's OAuth support?)"
            );
            return Ok(None);
        };
        let initial = match frontend::sasl_initial_response(&frame) {
            Ok(initial) => initial,
            Err(_) if frontend::password(&frame).is_ok() => {
                self.shared.metrics.auth_failure("expected_oauthbearer");
                return Err(Refused::new(
                    sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                    "expected_oauthbearer",
                    format!(
                        "this target takes tokens through SASL OAUTHBEARER (PostgreSQL 18's \
                         OAuth), not as a password: connect with libpq 18 (psql 18) giving \
                         oauth_issuer={} and oauth_client_id, or use a target whose client_auth \
                         is \"password\"",
                        settings.issuer
                    ),
                ));
            }
            Err(error) => return Err(Refused::protocol(&error)),
        };
        if initial.mechanism != oauthbearer::MECHANISM {
            return Err(Refused::new(
                sqlstate::PROTOCOL_VIOLATION,
                "unsupported_sasl_mechanism",
                "the client selected a SASL mechanism this target does not offer: it offers \
                 only OAUTHBEARER",
            ));
        }
        let later;
        let data = match initial.data {
            Some(data) => data,
            // No initial response: an empty challenge asks for it (RFC 4422 section 5).
            None => {
                let mut out = BytesMut::new();
                backend::encode_authentication_sasl_continue(b"", &mut out);
                self.write(&out).await?;
                let Some(frame) = self.read_auth_frame().await? else {
                    return Ok(None);
                };
                later = frame;
                frontend::sasl_response(&later).map_err(|e| Refused::protocol(&e))?
            }
        };
        let failed = match oauthbearer::parse_initial_response(data) {
            Err(malformed) => {
                return Err(Refused::new(
                    malformed.sqlstate(),
                    malformed.label(),
                    malformed.to_string(),
                ));
            }
            Ok(ClientResponse::Discovery) => Refused::new(
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                "oauth_discovery",
                format!(
                    "no token given: get one from {} (scope \"{}\") and connect again with it; \
                     libpq 18 does this itself when given oauth_issuer and oauth_client_id",
                    settings.issuer, settings.scope
                ),
            ),
            Ok(ClientResponse::NotBearer) => {
                self.shared.metrics.auth_failure("not_bearer");
                Refused::new(
                    sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                    "not_bearer",
                    "the OAUTHBEARER auth value is not a bearer token: send \"Bearer <token>\" \
                     (RFC 6750 section 2.1)",
                )
            }
            Ok(ClientResponse::Bearer(token)) => match self.shared.verifier.verify(token).await {
                Ok(identity) => return Ok(Some(identity)),
                // PostgreSQL answers every OAuth failure with 28000, whatever the cause.
                Err(error) => {
                    self.shared.metrics.auth_failure(error.label());
                    Refused::new(
                        sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                        error.label(),
                        error.to_string(),
                    )
                }
            },
        };
        drop(frame);
        // RFC 7628 section 3.2.2: the error result, then the client's kvsep, then the failure.
        let mut out = BytesMut::new();
        backend::encode_authentication_sasl_continue(
            &oauthbearer::error_result(&settings.issuer, &settings.scope),
            &mut out,
        );
        self.write(&out).await?;
        match self.read_auth_frame().await? {
            None => Err(failed),
            Some(frame) => match frontend::sasl_response(&frame) {
                Ok(data) if oauthbearer::is_error_acknowledgement(data) => Err(failed),
                _ => Err(Refused::new(
                    sqlstate::PROTOCOL_VIOLATION,
                    "oauthbearer_malformed",
                    "malformed OAUTHBEARER message: after an error result the client must send \
                     a single 0x01 (RFC 7628 section 3.2.3)",
                )),
            },
        }
    }

    /// The next frame of the authentication exchange; `None` when the client closed the
    /// connection instead.
    async fn read_auth_frame(&mut self) -> Result<Option<Frame>, Refused> {
        let decoder = FrameDecoder::new(Side::Frontend, limits::MAX_AUTH_MESSAGE_LENGTH);
        loop {
            match decoder.decode(&mut self.buffer) {
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) => {
                    if self.read_more().await? == 0 {
                        return Ok(None);
                    }
                }
                Err(error) => return Err(Refused::protocol(&error)),
            }
        }
    }

    /// Asks for a password and reads the token from the answer. `Ok(None)`: the client closed
    /// the connection instead (psql does this to prompt for a password, then reconnects).
    async fn read_token(&mut self) -> Result<Option<String>, Refused> {
        let mut out = BytesMut::new();
        backend::encode_authentication_cleartext_password(&mut out);
        self.write(&out).await?;
        let Some(frame) = self.read_auth_frame().await? else {
            return Ok(None);
        };
        if frame.tag() != frontend::PASSWORD {
            return Err(Refused::new(
                sqlstate::PROTOCOL_VIOLATION,
                "expected_password",
                "protocol violation: expected a password message carrying the token",
            ));
        }
        let token = frontend::password(&frame).map_err(|e| Refused::protocol(&e))?;
        if token.trim().is_empty() {
            self.shared.metrics.auth_failure("no_token");
            return Err(Refused::new(
                sqlstate::INVALID_PASSWORD,
                "no_token",
                "no token given: pass your identity token as the password (for psql, in PGPASSWORD)",
            ));
        }
        Ok(Some(token.trim().to_owned()))
    }

    /// Logs in upstream and prepares the session: `SET ROLE` in set_role mode and the signed
    /// claims, sent in one message as soon as the backend's pid is known.
    async fn open_upstream(
        &mut self,
        target: &Target,
        role: &str,
        identity: &Identity,
        parameters: &[(String, String)],
    ) -> Result<(Upstream, SessionLease), Refused> {
        let metrics = &self.shared.metrics;
        let upstream_refused = |error: UpstreamError| {
            tracing::warn!(target = %target.name, role, error = %error, "upstream login failed");
            metrics.upstream_error(&error);
            upstream_refusal(&target.name, role, &error)
        };
        let (mut upstream, lease) = target
            .session(role, identity, parameters)
            .await
            .map_err(upstream_refused)?;
        if target.transaction_pooled() {
            // The role and the claims are applied per transaction, transaction-locally.
            return Ok((upstream, lease));
        }
        let mut setup = Vec::new();
        if target.config.mode == UpstreamMode::SetRole {
            setup.push(format!("SET ROLE {}", quote_ident(role)));
        }
        if let Some(key) = target.signing_key().await {
            let claims = key.sign(identity, upstream.key.process_id);
            setup.push(format!("SET postern.claims = {}", quote_literal(&claims)));
        }
        if !setup.is_empty() {
            let result = upstream
                .simple_query(&setup.join("; "))
                .await
                .map_err(upstream_refused)?;
            for (name, value) in &result.parameters {
                upstream.set_parameter(name, value);
            }
        }
        Ok((upstream, lease))
    }

    /// Records the accepted connection and sends the login completion; the session is then
    /// ready to run. `None`: it was refused (and told why) on the way.
    async fn open_session(self, ready: Ready) -> Option<Session> {
        let Connection {
            shared,
            mut stream,
            buffer,
            base_event,
            peer,
            ..
        } = self;
        let Ready {
            session_id,
            identity,
            request,
            target,
            upstream,
            cancel,
            backend,
            parameters,
            lease,
        } = ready;
        let watched = shared
            .baselines
            .open_session(
                &identity,
                &target.name,
                peer.ip(),
                (shared.clock)(),
                &base_event,
            )
            .await;
        let (baseline, network_anomaly) = match watched {
            Ok(watched) => watched,
            Err(error) => {
                tracing::error!(error = %error, "cannot read a service identity's baseline; connection refused");
                let refused = Refused::new(
                    sqlstate::IO_ERROR,
                    "baseline_unavailable",
                    format!(
                        "connection refused: the baseline of {} could not be read from the \
                         control store, and a service identity is not let in unwatched",
                        identity.subject
                    ),
                );
                let event =
                    events::connection(&base_event, Some((refused.reason, &refused.message)));
                let _ = shared.audit.record(event).await;
                send_fatal(&mut stream, &refused).await;
                upstream.terminate().await;
                return None;
            }
        };
        let accepted = events::connection(&base_event, None);
        let recorded = match shared.audit.record(accepted).await {
            Ok(receipt) => match network_anomaly {
                Some(anomaly) => {
                    shared.metrics.anomaly("network");
                    shared.audit.record(anomaly).await
                }
                None => Ok(receipt),
            },
            Err(error) => Err(error),
        };
        if let Err(error) = recorded {
            tracing::error!(error = %error, "audit log write failed; connection refused");
            let refused = Refused::new(
                sqlstate::IO_ERROR,
                error.label(),
                format!(
                    "connection refused because it could not be recorded: {}",
                    error.client_reason()
                ),
            );
            send_fatal(&mut stream, &refused).await;
            upstream.terminate().await;
            return None;
        }
        let mut out = BytesMut::new();
        backend::encode_authentication_ok(&mut out);
        for (name, value) in &upstream.parameters {
            backend::encode_parameter_status(name, value, &mut out);
        }
        backend::encode_backend_key_data(cancel.key, &mut out);
        backend::encode_ready_for_query(TransactionStatus::Idle, &mut out);
        if stream.write_all(&out).await.is_err() {
            upstream.terminate().await;
            return None;
        }
        shared.metrics.connection_accepted();
        tracing::info!(client = %peer, subject = %identity.subject, target = %target.name, "session started");
        let registered = shared.sessions.register(
            session_id,
            identity.clone(),
            request.role.clone(),
            target.name.clone(),
            peer,
            request.application_name.clone(),
        );
        let context = SessionContext {
            classifier: shared.classifier.clone(),
            audit: shared.audit.clone(),
            mode: target.config.mode,
            base_event: Arc::new(postern_audit::EventBase::new(base_event)),
            upstream_cancel: (target.endpoint.clone(), backend.clone()),
            target: target.clone(),
            live: registered.session.clone(),
            limits: target.config.sessions.for_role(&request.role),
            token_grace: target.config.sessions.token_grace,
            approvals: shared.approvals.clone(),
            metrics: shared.metrics.clone(),
            cancel: shared.cancels.signal(&cancel),
            baseline,
            transaction_pooled: target.transaction_pooled(),
            policy: session::SessionPolicyContext {
                policies: shared.policies.clone(),
                identity: identity.clone(),
                request,
                clock: shared.clock.clone(),
            },
        };
        let link = if target.transaction_pooled() {
            // The connection the login used goes back at once; the session's link takes one
            // per transaction.
            let signing_key = target.signing_key().await;
            if let Some(pool) = lease.into_pool_lease() {
                pool.give_back_clean(upstream);
            } else {
                upstream.terminate().await;
            }
            Link::PerTransaction(crate::transaction_pool::start(
                crate::transaction_pool::Link {
                    target: target.clone(),
                    role: context.policy.request.role.clone(),
                    identity: identity.clone(),
                    parameters,
                    signing_key,
                    backend,
                    metrics: shared.metrics.clone(),
                },
            ))
        } else {
            Link::Held(Box::new((upstream, lease)))
        };
        // The handshake's buffer was sized for a token; a session's messages are mostly far
        // smaller, and the buffer grows to what they need and keeps that.
        let buffer = if buffer.is_empty() {
            BytesMut::with_capacity(SESSION_READ_BUFFER)
        } else {
            buffer
        };
        Some(Session {
            shared,
            peer,
            client: stream,
            buffer,
            link,
            context,
            cancel,
            registered,
        })
    }

    async fn forward_cancel(&self, request: startup::CancelRequest) {
        let key = backend::BackendKeyData {
            process_id: request.process_id,
            secret_key: request.secret_key,
        };
        match self.shared.cancels.resolve(key) {
            Some((endpoint, upstream_key)) => {
                if let Err(error) = upstream::cancel(&endpoint, upstream_key).await {
                    tracing::warn!(error = %error, "cancel request could not be forwarded");
                }
            }
            None => {
                tracing::info!(client = %self.peer, "cancel request with an unknown key ignored")
            }
        }
    }

    /// Sends a FATAL error, records the refusal, and closes.
    async fn refuse(&mut self, refused: &Refused) {
        tracing::info!(client = %self.peer, reason = refused.reason, message = %refused.message, "connection refused");
        self.shared.metrics.connection_refused(refused.reason);
        if self.base_event.is_empty() {
            self.base_event = events::connection_base(&random_hex(8), self.peer, self.tls);
        }
        let event = events::connection(&self.base_event, Some((refused.reason, &refused.message)));
        if let Err(error) = self.shared.audit.record_detached(event) {
            tracing::error!(error = %error, "audit log: cannot record a refused connection");
        }
        send_fatal(&mut self.stream, refused).await;
    }

    async fn read_more(&mut self) -> Result<usize, Refused> {
        self.stream.read_buf(&mut self.buffer).await.map_err(|e| {
            Refused::new(
                sqlstate::CONNECTION_FAILURE,
                "io_error",
                format!("connection error: {e}"),
            )
        })
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Refused> {
        self.stream.write_all(bytes).await.map_err(|e| {
            Refused::new(
                sqlstate::CONNECTION_FAILURE,
                "io_error",
                format!("connection error: {e}"),
            )
        })
    }
}

async fn send_fatal(stream: &mut BoxedStream, refused: &Refused) {
    let mut out = BytesMut::new();
    Report::new(Severity::Fatal, refused.code, &refused.message).encode(&mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// The schemas of a `search_path` startup parameter, as policy qualifies table names with them.
fn search_path_of(parameters: &[(String, String)]) -> Vec<String> {
    parameters
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("search_path"))
        .map(|(_, value)| {
            value
                .split(',')
                .map(|schema| schema.trim().trim_matches('"').to_owned())
                .filter(|schema| !schema.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// A server's SQLSTATE as one of the codes Postern forwards verbatim; anything else becomes a
/// generic connection failure.
/// What a client is told when no upstream connection could be had for `role` on `target`.
pub(crate) fn upstream_refusal(target: &str, role: &str, error: &UpstreamError) -> Refused {
    match error {
        UpstreamError::PoolBusy { max } => Refused::new(
            sqlstate::TOO_MANY_CONNECTIONS,
            "pool_busy",
            format!(
                "all {max} connections to target \"{target}\" for role \"{role}\" are busy: \
                 try again shortly (the operator can raise [targets.{target}.pool] \
                 max_connections)"
            ),
        ),
        UpstreamError::Server { code, message, .. } => Refused {
            code: sqlstate_static(code),
            reason: "upstream_refused",
            message: format!("the database refused the session for role \"{role}\": {message}"),
        },
        _ => Refused::new(
            sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            "upstream_unavailable",
            format!(
                "Postern cannot reach the database of target \"{target}\"; the operator's log has \
                 the details"
            ),
        ),
    }
}

fn sqlstate_static(code: &str) -> &'static str {
    const PASSED_ON: &[&str] = &[
        sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
        sqlstate::INVALID_PASSWORD,
        sqlstate::INVALID_CATALOG_NAME,
        sqlstate::TOO_MANY_CONNECTIONS,
        sqlstate::CANNOT_CONNECT_NOW,
        sqlstate::ADMIN_SHUTDOWN,
        sqlstate::INSUFFICIENT_PRIVILEGE,
        sqlstate::INVALID_PARAMETER_VALUE,
    ];
    PASSED_ON
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or(sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION)
}
