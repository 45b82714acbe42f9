//! A request frame decoded: the part of serving a connection that reads untrusted bytes, apart from
//! the rest so a fuzz target can drive it (`fuzz/fuzz_targets/request.rs`).

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;

use crate::api;

/// What a frame holds.
// Made once per request and moved once into its handler: boxing `Served` would cost an allocation
// per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Request {
    /// A request of an API and version served here.
    Served {
        key: ApiKey,
        version: i16,
        correlation_id: i32,
        header: RequestHeader,
        request: RequestKind,
    },
    /// ApiVersions above the versions served: answered with a v0 error response (DESIGN.md 7).
    ApiVersionsTooNew { correlation_id: i32 },
}

/// Decodes one frame (without its length prefix). Err: why the connection must be closed.
pub fn decode_request(frame: Bytes) -> Result<Request, String> {
    if frame.len() < 8 {
        return Err(format!(
            "frame of {} bytes has no request header",
            frame.len()
        ));
    }
    let mut peek = &frame[..8];
    let raw_key = peek.get_i16();
    let version = peek.get_i16();
    let correlation_id = peek.get_i32();
    let Ok(key) = ApiKey::try_from(raw_key) else {
        return Err(format!("unknown api key {raw_key}"));
    };
    let Some(range) = api::version_range(key) else {
        return Err(format!("api {key:?} is not served"));
    };
    if key == ApiKey::ApiVersions && version > range.max {
        return Ok(Request::ApiVersionsTooNew { correlation_id });
    }
    if version < range.min || version > range.max {
        return Err(format!(
            "{key:?} v{version} is outside the supported range {}-{}",
            range.min, range.max
        ));
    }
    let mut buf = frame;
    let header = RequestHeader::decode(&mut buf, key.request_header_version(version))
        .map_err(|e| format!("malformed {key:?} request header: {e}"))?;
    let request = RequestKind::decode(key, &mut buf, version)
        .map_err(|e| format!("malformed {key:?} v{version} request: {e}"))?;
    Ok(Request::Served {
        key,
        version,
        correlation_id,
        header,
        request,
    })
}
