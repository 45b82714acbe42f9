//! One client connection: frames in, responses out, in request order.
//!
//! A reader task reads length-prefixed frames (refusing any above `max_frame_bytes`) into a bounded
//! queue of `max_in_flight_requests`; this task serves them one at a time, in order, like Kafka, which
//! processes a connection's requests sequentially. Clients may pipeline: their requests wait in the
//! queue. Anything that cannot be parsed closes this connection only.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;

use crate::api;
use crate::node::Node;

/// What serving one frame led to.
enum Outcome {
    Respond(Bytes),
    Silent,
    Close(String),
}

/// Serves a connection until the client leaves or sends something unparseable.
pub(crate) async fn serve(node: Arc<Node>, socket: TcpStream, peer: SocketAddr) {
    let _ = socket.set_nodelay(true);
    let (reader, writer) = socket.into_split();
    let queue = usize::try_from(node.config.max_in_flight_requests).unwrap_or(16);
    let (tx, mut rx) = mpsc::channel::<Bytes>(queue);
    let max_frame = node.config.max_frame_bytes;
    let reader = tokio::spawn(read_frames(reader, tx, max_frame, peer));
    let mut writer = BufWriter::new(writer);
    let client = api::Client { peer };
    while let Some(frame) = rx.recv().await {
        match process(&node, &client, frame).await {
            Outcome::Respond(body) => {
                let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
                let written = async {
                    writer.write_all(&len.to_be_bytes()).await?;
                    writer.write_all(&body).await?;
                    writer.flush().await
                };
                if let Err(e) = written.await {
                    tracing::debug!(%peer, error = %e, "client went away");
                    break;
                }
            }
            Outcome::Silent => {}
            Outcome::Close(reason) => {
                tracing::info!(%peer, reason, "closing connection");
                break;
            }
        }
    }
    reader.abort();
}

async fn read_frames(
    mut reader: OwnedReadHalf,
    tx: mpsc::Sender<Bytes>,
    max_frame: u32,
    peer: SocketAddr,
) {
    loop {
        let len = match reader.read_u32().await {
            Ok(len) => len,
            Err(_) => return, // closed
        };
        if len > max_frame {
            tracing::warn!(%peer, len, max_frame, "request frame too large; closing connection");
            return;
        }
        let mut frame = BytesMut::zeroed(len as usize);
        if reader.read_exact(&mut frame).await.is_err() {
            tracing::debug!(%peer, len, "connection closed mid-frame");
            return;
        }
        if tx.send(frame.freeze()).await.is_err() {
            return;
        }
    }
}

async fn process(node: &Node, client: &api::Client, frame: Bytes) -> Outcome {
    if frame.len() < 8 {
        return Outcome::Close(format!(
            "frame of {} bytes has no request header",
            frame.len()
        ));
    }
    let mut peek = &frame[..8];
    let raw_key = peek.get_i16();
    let version = peek.get_i16();
    let correlation_id = peek.get_i32();
    let Ok(key) = ApiKey::try_from(raw_key) else {
        return Outcome::Close(format!("unknown api key {raw_key}"));
    };
    let Some(range) = api::version_range(key) else {
        return Outcome::Close(format!("api {key:?} is not served"));
    };
    if key == ApiKey::ApiVersions && version > range.max {
        return Outcome::Respond(api::unsupported_version_response(correlation_id));
    }
    if version < range.min || version > range.max {
        return Outcome::Close(format!(
            "{key:?} v{version} is outside the supported range {}-{}",
            range.min, range.max
        ));
    }
    let frame_len = frame.len();
    let mut buf = frame;
    let header = match RequestHeader::decode(&mut buf, key.request_header_version(version)) {
        Ok(h) => h,
        Err(e) => return Outcome::Close(format!("malformed {key:?} request header: {e}")),
    };
    let request = match RequestKind::decode(key, &mut buf, version) {
        Ok(r) => r,
        Err(e) => return Outcome::Close(format!("malformed {key:?} v{version} request: {e}")),
    };
    tracing::debug!(api = ?key, version, correlation_id, client = ?header.client_id, "request");
    let started = std::time::Instant::now();
    let bytes_in = frame_len;
    let Some(response) = api::handle(node, client, &header, request).await else {
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
