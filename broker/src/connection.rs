//! One client connection: frames in, responses out, in request order.
//!
//! A reader task reads length-prefixed frames (refusing any above `max_frame_bytes`) ahead of the
//! one being served; this task serves them in order and writes the responses in order. Requests
//! are processed one at a time, like Kafka does, with one exception: consecutive Produce requests
//! are pipelined. Each is validated and its batches queued in the WAL (offsets assigned) before the
//! next one starts, but the wait for durability overlaps, so pipelined requests share a group
//! commit instead of paying one fsync or object PUT each. Any other request first waits for the
//! Produce requests before it. Anything that cannot be parsed closes this connection only.
//!
//! What a connection holds is bounded twice: at most `max_in_flight_requests` requests read ahead
//! or waiting for durability, and at most `max_in_flight_bytes` of their frames (the reader waits
//! for room before it allocates a frame). The count must be large: librdkafka sends one Produce
//! request per partition, so with the object WAL (a PUT every `object_wal.flush_interval_ms`)
//! a connection serves at most `max_in_flight_requests` requests per flush interval.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use kafka_protocol::messages::{
    ApiKey, RequestKind, ResponseHeader, ResponseKind, SaslAuthenticateResponse,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::Encodable;
use kafka_protocol::protocol::StrBytes;
use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, ReadHalf, WriteHalf,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::api;
use crate::node::Node;
use crate::security::Session;
use crate::security::acl::ANONYMOUS;

/// What serving one frame led to.
enum Outcome {
    Respond(Bytes),
    Silent,
    Close(String),
    /// Send this, then close the connection (a failed login).
    Last(Bytes, String),
    /// A Produce whose batches are queued: its outcome once they are durable.
    Later(BoxFuture<'static, Outcome>),
}

/// A Kafka listener as its connections see it.
pub(crate) struct Listener {
    /// Its name (`[[listeners]]`).
    pub(crate) name: String,
    /// Where its clients are told to connect.
    pub(crate) advertised: (String, i32),
    /// Set for SSL and SASL_SSL listeners.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// Clients log in with SASL first (SASL_PLAINTEXT, SASL_SSL).
    pub(crate) sasl: bool,
    /// The loopback listener of this process's own clients (the embedded dispatcher).
    pub(crate) internal: bool,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("name", &self.name)
            .field("advertised", &self.advertised)
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl)
            .finish()
    }
}

/// Serves a connection (TCP, or TLS over it) until the client leaves or sends something
/// unparseable. Metadata and the other answers naming brokers give the addresses of the listener
/// it came in through. `principal`: who the client is before any SASL login (its certificate's
/// subject on an SSL listener with client certificates, else `User:ANONYMOUS`).
pub(crate) async fn serve<S>(
    node: Arc<Node>,
    socket: S,
    peer: SocketAddr,
    listener: Arc<Listener>,
    principal: Option<String>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let principal: Arc<str> = principal.map_or_else(|| Arc::from(ANONYMOUS), Arc::from);
    let session = Session::new(listener.sasl, listener.internal, principal);
    crate::node::ADVERTISED
        .scope(
            listener.advertised.clone(),
            serve_stream(node, socket, peer, session),
        )
        .await;
}

async fn serve_stream<S>(node: Arc<Node>, socket: S, peer: SocketAddr, mut session: Session)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(socket);
    let queue = usize::try_from(node.config.max_in_flight_requests).unwrap_or(1024);
    let (tx, mut rx) = mpsc::channel::<Frame>(queue);
    let budget = Arc::new(Semaphore::new(
        usize::try_from(node.config.max_in_flight_bytes).unwrap_or(usize::MAX >> 4),
    ));
    let limits = ReadLimits {
        max_frame: node.config.max_frame_bytes,
        max_in_flight_bytes: node.config.max_in_flight_bytes,
        idle: std::time::Duration::from_millis(node.config.connections_max_idle_ms),
        read: std::time::Duration::from_millis(node.config.request_read_timeout_ms),
    };
    // Stopped with this task, however it ends (also when the server aborts it at shutdown): the
    // socket closes only once both halves are gone, and a client must see it close.
    let reader = AbortOnDrop(tokio::spawn(read_frames(reader, tx, budget, limits, peer)));
    let mut writer = BufWriter::new(writer);
    let mut client = api::Client {
        peer,
        principal: session.principal.clone(),
    };
    // Produce requests waiting for durability, in request order.
    let mut in_flight: FuturesOrdered<BoxFuture<'static, Outcome>> = FuturesOrdered::new();
    'serve: loop {
        tokio::select! {
            biased;
            Some(outcome) = in_flight.next() => {
                if !respond(&mut writer, peer, outcome).await {
                    break 'serve;
                }
            }
            frame = rx.recv(), if in_flight.len() < queue => {
                let Some(Frame { bytes: frame, room }) = frame else { break 'serve };
                if !is_produce(&frame) {
                    // Every earlier Produce completes (and is answered) first.
                    while let Some(outcome) = in_flight.next().await {
                        if !respond(&mut writer, peer, outcome).await {
                            break 'serve;
                        }
                    }
                }
                match process(&node, &mut client, &mut session, frame).await {
                    // The frame's room in the budget is given back once it is answered.
                    Outcome::Later(pending) => in_flight.push_back(Box::pin(async move {
                        let outcome = pending.await;
                        drop(room);
                        outcome
                    })),
                    outcome => {
                        drop(room);
                        while let Some(earlier) = in_flight.next().await {
                            if !respond(&mut writer, peer, earlier).await {
                                break 'serve;
                            }
                        }
                        if !respond(&mut writer, peer, outcome).await {
                            break 'serve;
                        }
                    }
                }
            }
            else => break 'serve,
        }
    }
    // The client left (or broke the protocol): appends already queued complete on their own.
    drop(reader);
}

/// A task aborted when this handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn is_produce(frame: &[u8]) -> bool {
    frame.len() >= 2 && i16::from_be_bytes([frame[0], frame[1]]) == ApiKey::Produce as i16
}

/// Writes one outcome; false when the connection must end.
async fn respond<S: AsyncWrite>(
    writer: &mut BufWriter<WriteHalf<S>>,
    peer: SocketAddr,
    outcome: Outcome,
) -> bool {
    match outcome {
        Outcome::Respond(body) => {
            let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
            let written = async {
                writer.write_all(&len.to_be_bytes()).await?;
                writer.write_all(&body).await?;
                writer.flush().await
            };
            if let Err(e) = written.await {
                tracing::debug!(%peer, error = %e, "client went away");
                return false;
            }
            true
        }
        Outcome::Silent => true,
        Outcome::Close(reason) => {
            tracing::info!(%peer, reason, "closing connection");
            false
        }
        Outcome::Last(body, reason) => {
            let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
            let written = async {
                writer.write_all(&len.to_be_bytes()).await?;
                writer.write_all(&body).await?;
                writer.flush().await
            };
            let _ = written.await;
            tracing::info!(%peer, reason, "closing connection");
            false
        }
        // `process` never nests a pending outcome in another.
        Outcome::Later(_) => {
            tracing::error!(%peer, "nested pending response; closing connection");
            false
        }
    }
}

/// A request frame and its room in the connection's byte budget.
struct Frame {
    bytes: Bytes,
    room: OwnedSemaphorePermit,
}

/// How much and how slowly a connection may send.
#[derive(Debug, Clone, Copy)]
struct ReadLimits {
    max_frame: u32,
    max_in_flight_bytes: u32,
    /// Longest wait for the next request.
    idle: std::time::Duration,
    /// Longest wait for the rest of a request once its length arrived.
    read: std::time::Duration,
}

async fn read_frames<S: AsyncRead>(
    mut reader: ReadHalf<S>,
    tx: mpsc::Sender<Frame>,
    budget: Arc<Semaphore>,
    limits: ReadLimits,
    peer: SocketAddr,
) {
    let ReadLimits {
        max_frame,
        max_in_flight_bytes,
        ..
    } = limits;
    loop {
        let len = match tokio::time::timeout(limits.idle, reader.read_u32()).await {
            Ok(Ok(len)) => len,
            Ok(Err(_)) => return, // closed
            Err(_) => {
                tracing::info!(%peer, idle_ms = limits.idle.as_millis(), "idle connection closed");
                return;
            }
        };
        if len > max_frame {
            tracing::warn!(%peer, len, max_frame, "request frame too large; closing connection");
            return;
        }
        // A frame larger than the whole budget waits until it is alone.
        let Ok(room) = budget
            .clone()
            .acquire_many_owned(len.clamp(1, max_in_flight_bytes))
            .await
        else {
            return;
        };
        let mut frame = BytesMut::zeroed(len as usize);
        match tokio::time::timeout(limits.read, reader.read_exact(&mut frame)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                tracing::debug!(%peer, len, "connection closed mid-frame");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, len, "request not received in request_read_timeout_ms; connection closed");
                return;
            }
        }
        let frame = Frame {
            bytes: frame.freeze(),
            room,
        };
        if tx.send(frame).await.is_err() {
            return;
        }
    }
}

async fn process(
    node: &Node,
    client: &mut api::Client,
    session: &mut Session,
    frame: Bytes,
) -> Outcome {
    let frame_len = frame.len();
    if session.expects_token() {
        // After SaslHandshake v0 the exchange's tokens come as bare frames.
        return match session.authenticate(node, &frame).await {
            Ok(reply) => {
                client.principal = session.principal.clone();
                Outcome::Respond(Bytes::from(reply))
            }
            Err(refused) => Outcome::Close(refused.message),
        };
    }
    let (key, version, correlation_id, header, request) = match crate::wire::decode_request(frame) {
        Ok(crate::wire::Request::Served {
            key,
            version,
            correlation_id,
            header,
            request,
        }) => (key, version, correlation_id, header, request),
        Ok(crate::wire::Request::ApiVersionsTooNew { correlation_id }) => {
            return Outcome::Respond(api::unsupported_version_response(correlation_id));
        }
        Err(reason) => return Outcome::Close(reason),
    };
    tracing::debug!(api = ?key, version, correlation_id, client = ?header.client_id, "request");
    if !session.allows(key) {
        return Outcome::Close(format!(
            "unexpected {key:?} request before SASL authentication"
        ));
    }
    let started = std::time::Instant::now();
    match request {
        RequestKind::SaslHandshake(r) => {
            let code = session.handshake(node, &r.mechanism, version);
            let response = SaslHandshakeResponse::default()
                .with_error_code(code)
                .with_mechanisms(
                    node.config
                        .sasl
                        .mechanisms
                        .iter()
                        .map(|m| StrBytes::from_string(m.clone()))
                        .collect(),
                );
            let outcome = encode(
                key,
                version,
                correlation_id,
                Some(ResponseKind::SaslHandshake(response)),
                started,
                frame_len,
            );
            return match (code, outcome) {
                (0, outcome) => outcome,
                (_, Outcome::Respond(body)) => Outcome::Last(body, "SASL handshake refused".into()),
                (_, outcome) => outcome,
            };
        }
        RequestKind::SaslAuthenticate(r) => {
            let (response, refused) = match session.authenticate(node, &r.auth_bytes).await {
                Ok(reply) => {
                    client.principal = session.principal.clone();
                    (
                        SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(reply)),
                        None,
                    )
                }
                Err(refused) => (
                    SaslAuthenticateResponse::default()
                        .with_error_code(refused.code)
                        .with_error_message(Some(StrBytes::from_string(refused.message.clone()))),
                    Some(refused.message),
                ),
            };
            let outcome = encode(
                key,
                version,
                correlation_id,
                Some(ResponseKind::SaslAuthenticate(response)),
                started,
                frame_len,
            );
            return match (refused, outcome) {
                (Some(reason), Outcome::Respond(body)) => Outcome::Last(body, reason),
                (_, outcome) => outcome,
            };
        }
        _ => {}
    }
    match api::handle(node, client, &header, request).await {
        api::Answer::Now(response) => {
            encode(key, version, correlation_id, response, started, frame_len)
        }
        api::Answer::Later(pending) => Outcome::Later(Box::pin(async move {
            let response = pending.await;
            encode(key, version, correlation_id, response, started, frame_len)
        })),
    }
}

/// The response frame (or nothing, for acks=0), with the request's metrics recorded.
fn encode(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: Option<ResponseKind>,
    started: std::time::Instant,
    bytes_in: usize,
) -> Outcome {
    let Some(response) = response else {
        crate::metrics::request(key, started.elapsed().as_secs_f64(), bytes_in, 0);
        return Outcome::Silent;
    };
    let mut out = BytesMut::new();
    let encoded = ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, response.header_version(version))
        .and_then(|()| response.encode(&mut out, version));
    crate::metrics::request(key, started.elapsed().as_secs_f64(), bytes_in, out.len());
    match encoded {
        Ok(()) => Outcome::Respond(out.freeze()),
        Err(e) => {
            tracing::error!(api = ?key, version, error = %e, "cannot encode response");
            Outcome::Close(format!("cannot encode {key:?} v{version} response: {e}"))
        }
    }
}
