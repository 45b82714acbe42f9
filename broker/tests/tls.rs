//! TLS listeners (issue 11): `[[listeners]]` with SSL beside PLAINTEXT, each advertising itself in
//! Metadata; a plaintext client on the TLS listener is dropped; with `tls.client_ca_path` only
//! clients with a certificate from that CA get in. Certificates are made by rcgen for the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, MetadataRequest, MetadataResponse, RequestHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use weir_broker::config::{ListenerConfig, SecurityProtocol};

struct Pki {
    ca: rcgen::Certificate,
    ca_issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "weir test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let ca_issuer = rcgen::Issuer::new(params, ca_key);
        Pki { ca, ca_issuer }
    }

    /// A certificate for `names` signed by the CA: (cert PEM, key PEM).
    fn issue(&self, names: &[&str], common_name: &str) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca_issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A TLS client trusting the test CA, with a client certificate if given.
fn connector(pki: &Pki, client: Option<(String, String)>) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            use rustls::pki_types::pem::PemObject;
            let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One request and its response body over any stream.
async fn request<S, R>(stream: &mut S, key: ApiKey, version: i16, request: &R) -> Option<Bytes>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Encodable + HeaderVersion,
{
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("tls-test")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, R::header_version(version))
        .unwrap();
    request.encode(&mut body, version).unwrap();
    let mut frame = BytesMut::new();
    frame.put_u32(u32::try_from(body.len()).unwrap());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await.ok()?;
    let len = stream.read_u32().await.ok()?;
    let mut answer = vec![0u8; len as usize];
    stream.read_exact(&mut answer).await.ok()?;
    let mut answer = Bytes::from(answer);
    assert_eq!(answer.get_i32(), 7);
    if key.response_header_version(version) >= 1 {
        answer.get_u8();
    }
    Some(answer)
}

/// The (host, port) Metadata v12 names the broker with, over `stream`.
async fn advertised<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> Option<(String, i32)> {
    let mut body = request(stream, ApiKey::Metadata, 12, &MetadataRequest::default()).await?;
    let m = MetadataResponse::decode(&mut body, 12).unwrap();
    let b = &m.brokers[0];
    Some((b.host.to_string(), b.port))
}

async fn tls(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

fn listener(name: &str, protocol: SecurityProtocol, advertised: &str) -> ListenerConfig {
    ListenerConfig {
        name: name.to_string(),
        address: "127.0.0.1:0".parse().unwrap(),
        advertised: Some(advertised.to_string()),
        security_protocol: protocol,
    }
}

#[tokio::test]
async fn ssl_and_plaintext_listeners_side_by_side() {
    let pki = Pki::new();
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = pki.issue(&["localhost", "127.0.0.1"], "broker");
    let cert_path = write(files.path(), "broker.pem", &cert);
    let key_path = write(files.path(), "broker.key", &key);
    let node = common::InProcess::start_with(|c| {
        c.listeners = vec![
            listener("SECURE", SecurityProtocol::Ssl, "secure.example:9093"),
            listener(
                "INTERNAL",
                SecurityProtocol::Plaintext,
                "inside.example:9092",
            ),
        ];
        c.tls.cert_path = Some(cert_path.clone());
        c.tls.key_path = Some(key_path.clone());
    })
    .await;
    // The first listener is the one reported as the Kafka address.
    let secure = node.server.kafka_addr();
    let connector = connector(&pki, None);
    let mut stream = tls(&connector, secure).await.unwrap();
    assert!(
        request(
            &mut stream,
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default()
        )
        .await
        .is_some()
    );
    assert_eq!(
        advertised(&mut stream).await,
        Some(("secure.example".to_string(), 9093)),
        "the SSL listener advertises itself"
    );

    // Plaintext Kafka on the TLS listener: no answer, the connection is dropped.
    let mut plain = tokio::net::TcpStream::connect(secure).await.unwrap();
    assert!(
        request(
            &mut plain,
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default()
        )
        .await
        .is_none()
    );

    // The PLAINTEXT listener answers plaintext and advertises itself.
    let inside = node
        .server
        .kafka_addrs()
        .into_iter()
        .find(|a| *a != secure)
        .unwrap();
    let mut plain = tokio::net::TcpStream::connect(inside).await.unwrap();
    assert_eq!(
        advertised(&mut plain).await,
        Some(("inside.example".to_string(), 9092))
    );
}

#[tokio::test]
async fn client_certificates_are_required_with_a_client_ca() {
    let pki = Pki::new();
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = pki.issue(&["localhost"], "broker");
    let cert_path = write(files.path(), "broker.pem", &cert);
    let key_path = write(files.path(), "broker.key", &key);
    let ca_path = write(files.path(), "ca.pem", &pki.ca.pem());
    let node = common::InProcess::start_with(|c| {
        c.listeners = vec![listener("SSL", SecurityProtocol::Ssl, "localhost:1")];
        c.tls.cert_path = Some(cert_path.clone());
        c.tls.key_path = Some(key_path.clone());
        c.tls.client_ca_path = Some(ca_path.clone());
    })
    .await;
    let addr = node.server.kafka_addr();
    // Without a certificate the server refuses the handshake (seen at the first read).
    let anonymous = connector(&pki, None);
    let refused = match tls(&anonymous, addr).await {
        Err(_) => true,
        Ok(mut s) => request(
            &mut s,
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default(),
        )
        .await
        .is_none(),
    };
    assert!(refused, "a client without a certificate got in");
    // With one from the CA it is served.
    let client = pki.issue(&["client"], "alice");
    let mut stream = tls(&connector(&pki, Some(client)), addr).await.unwrap();
    assert!(
        request(
            &mut stream,
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default()
        )
        .await
        .is_some()
    );
    // A certificate from another CA is refused.
    let stranger = Pki::new().issue(&["client"], "mallory");
    let refused = match tls(&connector(&pki, Some(stranger)), addr).await {
        Err(_) => true,
        Ok(mut s) => request(
            &mut s,
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default(),
        )
        .await
        .is_none(),
    };
    assert!(refused, "a certificate from another CA got in");
}

#[test]
fn a_bad_tls_setting_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), |_| {});
    config.listeners = vec![listener("SSL", SecurityProtocol::Ssl, "localhost:1")];
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("tls.cert_path"), "{err}");
    config.tls.cert_path = Some(dir.path().join("missing.pem"));
    config.tls.key_path = Some(dir.path().join("missing.key"));
    let Err(err) = weir_broker::tls::acceptor(&config.tls) else {
        panic!("missing certificate files were accepted");
    };
    assert!(format!("{err:#}").contains("tls.cert_path"), "{err:#}");
}
