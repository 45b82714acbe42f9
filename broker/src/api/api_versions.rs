//! ApiVersions, including the hand-built v0 answer to a version the broker does not know.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::messages::api_versions_response::ApiVersion;

use super::supported;

fn api_keys() -> Vec<ApiVersion> {
    supported()
        .into_iter()
        .map(|(key, range)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(range.min)
                .with_max_version(range.max)
        })
        .collect()
}

/// The ApiVersions answer. Tagged fields keep their defaults, so none is encoded: older librdkafka
/// cannot parse them.
pub(super) fn handle() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_keys())
}

/// The answer to an ApiVersions request of a version above ours, as Kafka gives it: a v0 body
/// (error code, then the array of ranges) with error 35, so the client retries with a version from
/// the list. Built by hand because the body must be v0 whatever version was asked. Returns the frame
/// body after the length prefix: correlation id, then the v0 response.
pub(crate) fn unsupported_version_response(correlation_id: i32) -> Bytes {
    let keys = api_keys();
    let mut out = BytesMut::with_capacity(10 + keys.len() * 6);
    out.put_i32(correlation_id);
    out.put_i16(ResponseError::UnsupportedVersion.code());
    out.put_i32(i32::try_from(keys.len()).unwrap_or(i32::MAX));
    for key in keys {
        out.put_i16(key.api_key);
        out.put_i16(key.min_version);
        out.put_i16(key.max_version);
    }
    out.freeze()
}
