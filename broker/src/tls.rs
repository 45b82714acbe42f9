//! TLS for the SSL listeners (rustls): the server's certificate and key from `[tls]`, and, with
//! `client_ca_path`, client certificates required and verified against those CAs.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// The acceptor of the SSL listeners; errors name the file and the setting.
pub fn acceptor(config: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let cert_path = config
        .cert_path
        .as_deref()
        .context("invalid setting tls.cert_path: required by an SSL listener")?;
    let key_path = config
        .key_path
        .as_deref()
        .context("invalid setting tls.key_path: required by an SSL listener")?;
    let chain = certificates(cert_path, "tls.cert_path")?;
    let key = PrivateKeyDer::from_pem_file(key_path).with_context(|| {
        format!(
            "invalid setting tls.key_path: no private key in {}",
            key_path.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &config.client_ca_path {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in certificates(ca_path, "tls.client_ca_path")? {
                roots.add(ca).with_context(|| {
                    format!(
                        "invalid setting tls.client_ca_path: a certificate in {} is not a CA",
                        ca_path.display()
                    )
                })?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .context("invalid setting tls.client_ca_path")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder
        .with_single_cert(chain, key)
        .context("invalid setting tls.cert_path / tls.key_path: the key does not match")?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

fn certificates(path: &Path, key: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("invalid setting {key}: cannot read {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("invalid setting {key}: {} is not PEM", path.display()))?;
    if chain.is_empty() {
        anyhow::bail!(
            "invalid setting {key}: no certificate in {}",
            path.display()
        );
    }
    Ok(chain)
}
