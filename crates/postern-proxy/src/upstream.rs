//! Connections to the upstream database: TCP, optional verified TLS, the startup exchange and
//! password authentication (SCRAM-SHA-256, md5, cleartext, or none), and a minimal simple-query
//! client for Postern's own administrative statements.

use std::time::Duration;

use bytes::BytesMut;
use postern_wire::backend::{self, Authentication, BackendKeyData};
use postern_wire::frame::Side;
use postern_wire::{Frame, FrameDecoder, frontend, limits, startup};
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::UpstreamError;
use crate::io::BoxedStream;

/// How long connecting and logging in to the database may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a target's database is and how to reach it.
#[derive(Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub database: String,
    /// TLS connector and the name to verify, when TLS is required.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Endpoint {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Opens the byte stream: TCP, then TLS if configured. The server's certificate is verified
    /// against the configured roots and name; a server that declines TLS is an error, never a
    /// silent downgrade.
    pub async fn open(&self) -> Result<BoxedStream, UpstreamError> {
        let address = self.address();
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| UpstreamError::Timeout {
            address: address.clone(),
        })?
        .map_err(|source| UpstreamError::Connect {
            address: address.clone(),
            source,
        })?;
        tcp.set_nodelay(true)?;
        let Some((connector, name)) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let mut tcp = tcp;
        let mut request = BytesMut::new();
        startup::encode_ssl_request(&mut request);
        tcp.write_all(&request).await?;
        let answer = tcp.read_u8().await?;
        if answer != b'S' {
            return Err(UpstreamError::TlsRefused { address, answer });
        }
        let tls = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(|source| UpstreamError::Tls { address, source })?;
        Ok(Box::new(tls))
    }
}

/// A logged-in upstream connection, ready for queries.
pub struct Upstream {
    pub stream: BoxedStream,
    /// Bytes already read past the last message handled.
    pub buffer: BytesMut,
    /// ParameterStatus values the server reported, in order.
    pub parameters: Vec<(String, String)>,
    /// The server's own cancel key for this backend.
    pub key: BackendKeyData,
    /// The statements transaction pooling keeps prepared on this connection.
    pub statements: crate::transaction_pool::ServerStatements,
}

/// Records a ParameterStatus in `parameters`, replacing the earlier value.
pub(crate) fn record_parameter(parameters: &mut Vec<(String, String)>, name: &str, value: &str) {
    match parameters.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => value.clone_into(&mut slot.1),
        None => parameters.push((name.to_owned(), value.to_owned())),
    }
}

/// Who to log in as.
pub struct Login<'a> {
    pub user: &'a str,
    pub password: Option<&'a str>,
    /// Extra startup parameters (the client's allowed settings).
    pub parameters: &'a [(String, String)],
}

/// Connects and logs in, within [`CONNECT_TIMEOUT`].
pub async fn connect(endpoint: &Endpoint, login: &Login<'_>) -> Result<Upstream, UpstreamError> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(endpoint, login))
        .await
        .map_err(|_| UpstreamError::Timeout {
            address: endpoint.address(),
        })?
}

async fn connect_inner(endpoint: &Endpoint, login: &Login<'_>) -> Result<Upstream, UpstreamError> {
    let mut stream = endpoint.open().await?;
    let mut parameters: Vec<(&str, &str)> = vec![
        ("user", login.user),
        ("database", endpoint.database.as_str()),
    ];
    parameters.extend(
        login
            .parameters
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let mut out = BytesMut::new();
    startup::encode_startup(&parameters, &mut out);
    stream.write_all(&out).await?;

    let mut reader = FrameReader::new(limits::MAX_BACKEND_MESSAGE_LENGTH);
    let mut scram: Option<ScramSha256> = None;
    let mut reported = Vec::new();
    let mut key = None;
    loop {
        let frame = reader.next(&mut stream).await?;
        match frame.tag() {
            backend::AUTHENTICATION => {
                let mut reply = BytesMut::new();
                match backend::authentication(&frame)? {
                    Authentication::Ok => continue,
                    Authentication::CleartextPassword => {
                        frontend::encode_password(password(login)?, &mut reply);
                    }
                    Authentication::Md5Password { salt } => {
                        let hash = postgres_protocol::authentication::md5_hash(
                            login.user.as_bytes(),
                            password(login)?.as_bytes(),
                            salt,
                        );
                        frontend::encode_password(&hash, &mut reply);
                    }
                    Authentication::Sasl { mechanisms } => {
                        if !mechanisms.contains(&SCRAM_SHA_256) {
                            return Err(UpstreamError::UnsupportedAuth(format!(
                                "SASL mechanisms {}",
                                mechanisms.join(", ")
                            )));
                        }
                        let state = ScramSha256::new(
                            password(login)?.as_bytes(),
                            ChannelBinding::unsupported(),
                        );
                        frontend::encode_sasl_initial_response(
                            SCRAM_SHA_256,
                            state.message(),
                            &mut reply,
                        );
                        scram = Some(state);
                    }
                    Authentication::SaslContinue(data) => {
                        let state = scram.as_mut().ok_or(UpstreamError::UnsupportedAuth(
                            "SASL continue without SASL start".into(),
                        ))?;
                        state.update(data).map_err(UpstreamError::Scram)?;
                        frontend::encode_sasl_response(state.message(), &mut reply);
                    }
                    Authentication::SaslFinal(data) => {
                        let state = scram.as_mut().ok_or(UpstreamError::UnsupportedAuth(
                            "SASL final without SASL start".into(),
                        ))?;
                        // Verifies the server's signature: a server that does not know the
                        // password cannot complete SCRAM.
                        state.finish(data).map_err(UpstreamError::Scram)?;
                        continue;
                    }
                    Authentication::Unsupported(code) => {
                        return Err(UpstreamError::UnsupportedAuth(format!(
                            "request code {code}"
                        )));
                    }
                }
                stream.write_all(&reply).await?;
            }
            backend::PARAMETER_STATUS => {
                let (name, value) = backend::parameter_status(&frame)?;
                reported.push((name.to_owned(), value.to_owned()));
            }
            backend::BACKEND_KEY_DATA => key = Some(backend::backend_key_data(&frame)?),
            backend::ERROR_RESPONSE => return Err(server_error(&frame)),
            backend::READY_FOR_QUERY => break,
            // NoticeResponse and NegotiateProtocolVersion need nothing from Postern here.
            _ => {}
        }
    }
    let key = key.unwrap_or(BackendKeyData {
        process_id: 0,
        secret_key: 0,
    });
    Ok(Upstream {
        stream,
        buffer: reader.buffer,
        parameters: reported,
        key,
        statements: Default::default(),
    })
}

fn password<'a>(login: &Login<'a>) -> Result<&'a str, UpstreamError> {
    login.password.ok_or_else(|| UpstreamError::NoPassword {
        user: login.user.to_owned(),
    })
}

/// Turns an ErrorResponse into an [`UpstreamError::Server`].
pub fn server_error(frame: &Frame) -> UpstreamError {
    match backend::error_fields(frame) {
        Ok(fields) => UpstreamError::Server {
            code: fields.code,
            message: fields.message,
            detail: fields.detail,
        },
        Err(e) => UpstreamError::Protocol(e),
    }
}

/// The result of [`Upstream::simple_query`].
#[derive(Debug, Default)]
pub struct QueryResult {
    /// Every DataRow, as text.
    pub rows: Vec<Vec<Option<String>>>,
    /// ParameterStatus messages the statements caused.
    pub parameters: Vec<(String, String)>,
}

impl Upstream {
    /// Runs `sql` with the simple query protocol and waits for ReadyForQuery.
    pub async fn simple_query(&mut self, sql: &str) -> Result<QueryResult, UpstreamError> {
        let mut out = BytesMut::new();
        frontend::encode_query(sql, &mut out);
        self.stream.write_all(&out).await?;
        let mut reader = FrameReader {
            decoder: FrameDecoder::new(Side::Backend, limits::MAX_BACKEND_MESSAGE_LENGTH),
            buffer: std::mem::take(&mut self.buffer),
        };
        let mut result = QueryResult::default();
        let mut failure = None;
        loop {
            let frame = reader.next(&mut self.stream).await?;
            match frame.tag() {
                backend::DATA_ROW => {
                    let row = backend::data_row(&frame)?
                        .into_iter()
                        .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                        .collect();
                    result.rows.push(row);
                }
                backend::PARAMETER_STATUS => {
                    let (name, value) = backend::parameter_status(&frame)?;
                    result.parameters.push((name.to_owned(), value.to_owned()));
                }
                backend::ERROR_RESPONSE => failure = Some(server_error(&frame)),
                backend::READY_FOR_QUERY => break,
                _ => {}
            }
        }
        self.buffer = reader.buffer;
        match failure {
            Some(error) => Err(error),
            None => Ok(result),
        }
    }

    /// Records a ParameterStatus the server sent, replacing the earlier value.
    pub fn set_parameter(&mut self, name: &str, value: &str) {
        record_parameter(&mut self.parameters, name, value);
    }

    /// Ends the connection politely.
    pub async fn terminate(mut self) {
        let mut out = BytesMut::new();
        frontend::encode_terminate(&mut out);
        let _ = self.stream.write_all(&out).await;
        let _ = self.stream.shutdown().await;
    }
}

/// Reads whole backend frames from a stream.
pub(crate) struct FrameReader {
    decoder: FrameDecoder,
    pub(crate) buffer: BytesMut,
}

impl FrameReader {
    pub(crate) fn new(max_length: usize) -> Self {
        Self {
            decoder: FrameDecoder::new(Side::Backend, max_length),
            buffer: BytesMut::with_capacity(8192),
        }
    }

    pub(crate) async fn next(&mut self, stream: &mut BoxedStream) -> Result<Frame, UpstreamError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buffer)? {
                return Ok(frame);
            }
            if stream.read_buf(&mut self.buffer).await? == 0 {
                return Err(UpstreamError::Closed);
            }
        }
    }
}

/// Sends a CancelRequest for `key` to the database behind `endpoint`.
pub async fn cancel(endpoint: &Endpoint, key: BackendKeyData) -> Result<(), UpstreamError> {
    let mut stream = endpoint.open().await?;
    let mut out = BytesMut::new();
    startup::encode_cancel(
        startup::CancelRequest {
            process_id: key.process_id,
            secret_key: key.secret_key,
        },
        &mut out,
    );
    stream.write_all(&out).await?;
    // The server closes the connection once it has read the request; waiting for that makes
    // sure the request was delivered before the caller moves on.
    let mut sink = [0u8; 1];
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, stream.read(&mut sink)).await;
    Ok(())
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal (for `standard_conforming_strings = on`, which Postern keeps).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
