//! TLS for the webhook listener: a certificate resolver whose key can be swapped while
//! connections are being accepted, so a rotated Secret takes effect without a restart and
//! without failing a single handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a PEM certificate chain and key, checking that they belong together, so a
/// half-written rotation is rejected instead of served.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    if chain.is_empty() {
        bail!("{}: no certificate found", cert.display());
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading key {}", key.display()))?;
    CertifiedKey::from_der(chain, key_der, &provider()).with_context(|| {
        format!(
            "{} and {} do not form a usable key pair",
            cert.display(),
            key.display()
        )
    })
}

/// As [`load_certified_key`], from PEM text.
pub fn certified_key_from_pem(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("parsing the certificate")?;
    if chain.is_empty() {
        bail!("no certificate found");
    }
    let key_der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("parsing the key")?;
    CertifiedKey::from_der(chain, key_der, &provider())
        .context("the certificate and key do not form a usable key pair")
}

/// Hands every new handshake the current key.
#[derive(Debug)]
pub struct ReloadingResolver {
    current: ArcSwap<CertifiedKey>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl ReloadingResolver {
    pub fn new(cert_path: PathBuf, key_path: PathBuf) -> Result<ReloadingResolver> {
        let ck = load_certified_key(&cert_path, &key_path)?;
        Ok(ReloadingResolver {
            current: ArcSwap::from_pointee(ck),
            cert_path,
            key_path,
        })
    }

    /// Loads the files again; on error the old key stays in use.
    pub fn reload(&self) -> Result<()> {
        let ck = load_certified_key(&self.cert_path, &self.key_path)?;
        self.current.store(Arc::new(ck));
        Ok(())
    }

    /// A resolver serving `cert_pem`/`key_pem` from memory (self-managed certificates);
    /// [`Self::set_pem`] replaces them, and `reload` re-reads nothing.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ReloadingResolver> {
        Ok(ReloadingResolver {
            current: ArcSwap::from_pointee(certified_key_from_pem(cert_pem, key_pem)?),
            cert_path: PathBuf::new(),
            key_path: PathBuf::new(),
        })
    }

    /// Serves new PEM from the next handshake on; on error the old key stays in use.
    pub fn set_pem(&self, cert_pem: &str, key_pem: &str) -> Result<()> {
        self.current
            .store(Arc::new(certified_key_from_pem(cert_pem, key_pem)?));
        Ok(())
    }

    /// Sets the certificate-expiry gauge from the certificate now served.
    pub fn record_expiry(&self, metrics: &crate::metrics::Metrics) {
        if let Ok((_, c)) = x509_parser::parse_x509_certificate(&self.current_cert()) {
            metrics
                .tls_certificate_expiry
                .set(c.validity().not_after.timestamp());
        }
    }

    pub fn current_cert(&self) -> CertificateDer<'static> {
        self.current.load().cert[0].clone()
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Server config with HTTP/2 and HTTP/1.1, and client-certificate verification when a
/// client CA is given (so only the API server, holding a cert from that CA, can call).
pub fn server_config(
    resolver: Arc<ReloadingResolver>,
    client_ca: Option<&Path>,
) -> Result<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading {}", path.display()))?
            {
                roots.add(c.with_context(|| format!("parsing {}", path.display()))?)?;
            }
            if roots.is_empty() {
                bail!("{}: no CA certificate found", path.display());
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .context("client CA")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder.with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}
