//! TLS to Postgres with rustls, set up from the libpq settings of a connection string:
//! `sslmode` (`disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full`),
//! `sslrootcert` (a PEM file, or `system` for the platform's roots), and `sslcert` with
//! `sslkey` (a client certificate). tokio-postgres knows only the first three modes and
//! none of the files, so [`ConnectConfig::parse`] takes these settings out of the
//! string before tokio-postgres reads the rest.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::Error;

/// Where and how to connect: tokio-postgres's settings and the TLS connector the
/// string's `ssl*` settings ask for. Cheap to clone.
#[derive(Clone)]
pub struct ConnectConfig {
    /// Everything but TLS: host, port, user, options, timeouts, and whether TLS is
    /// used (`ssl_mode`: disable, prefer or require).
    pub postgres: tokio_postgres::Config,
    /// The TLS connector: what it trusts and which client certificate it shows.
    pub tls: MakeRustlsConnect,
    verify: Verify,
}

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Nothing: the connection is encrypted, the server is not authenticated
    /// (`prefer`, `require`).
    Nothing,
    /// The chain up to a trusted root, not the name (`verify-ca`, or `require` with an
    /// explicit `sslrootcert`, as libpq does).
    Chain,
    /// The chain and that the certificate names the host connected to (`verify-full`).
    Full,
}

impl ConnectConfig {
    /// Reads a `postgres://` URL or a `key=value` connection string.
    pub fn parse(url: &str) -> Result<ConnectConfig, Error> {
        let (rest, ssl) = take_ssl_settings(url);
        let mut postgres: tokio_postgres::Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| Error::InvalidUrl(e.to_string()))?;
        let mode = ssl.mode.as_deref().unwrap_or("prefer");
        let (ssl_mode, verify) = match mode {
            "disable" => (SslMode::Disable, Verify::Nothing),
            "allow" | "prefer" => (SslMode::Prefer, Verify::Nothing),
            "require" if ssl.rootcert.is_some() => (SslMode::Require, Verify::Chain),
            "require" => (SslMode::Require, Verify::Nothing),
            "verify-ca" => (SslMode::Require, Verify::Chain),
            "verify-full" => (SslMode::Require, Verify::Full),
            other => {
                return Err(Error::InvalidUrl(format!(
                    "sslmode must be disable, allow, prefer, require, verify-ca or verify-full, not {other:?}"
                )))
            }
        };
        postgres.ssl_mode(ssl_mode);
        let roots = match verify {
            Verify::Nothing => None,
            Verify::Chain | Verify::Full => Some(roots(ssl.rootcert.as_deref(), mode)?),
        };
        let client_cert = match (ssl.cert, ssl.key) {
            (Some(cert), Some(key)) => Some(client_certificate(&cert, &key)?),
            (None, None) => None,
            _ => {
                return Err(Error::InvalidUrl(
                    "sslcert and sslkey go together: give both or neither".into(),
                ))
            }
        };
        let tls = connector(verify, roots, client_cert)?;
        Ok(ConnectConfig {
            postgres,
            tls,
            verify,
        })
    }

    /// How much of the server's certificate this configuration checks.
    pub fn verify(&self) -> Verify {
        self.verify
    }
}

impl From<tokio_postgres::Config> for ConnectConfig {
    /// Settings built in code: TLS as their `ssl_mode` says (tokio-postgres's default is
    /// prefer), the server's certificate not checked.
    fn from(postgres: tokio_postgres::Config) -> ConnectConfig {
        let tls = connector(Verify::Nothing, None, None)
            .expect("a connector that checks nothing needs no files");
        ConnectConfig {
            postgres,
            tls,
            verify: Verify::Nothing,
        }
    }
}

impl fmt::Debug for ConnectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectConfig")
            .field("postgres", &self.postgres)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

/// The `ssl*` settings taken out of a connection string.
#[derive(Debug, Default, PartialEq, Eq)]
struct SslSettings {
    mode: Option<String>,
    rootcert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

impl SslSettings {
    /// Keeps `value` when `key` is one of ours (true), else leaves it (false).
    fn take(&mut self, key: &str, value: String) -> bool {
        let slot = match key {
            "sslmode" => &mut self.mode,
            "sslrootcert" => &mut self.rootcert,
            "sslcert" => &mut self.cert,
            "sslkey" => &mut self.key,
            _ => return false,
        };
        *slot = Some(value);
        true
    }
}

/// `url` without its `sslmode`, `sslrootcert`, `sslcert` and `sslkey`, and those
/// settings. A string this cannot read is returned whole, for tokio-postgres to say
/// what is wrong with it.
fn take_ssl_settings(url: &str) -> (String, SslSettings) {
    let mut ssl = SslSettings::default();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), ssl);
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|s| s.into_owned())
            };
            let taken = match (decode(key), decode(value)) {
                (Ok(key), Ok(value)) => ssl.take(&key, value),
                _ => false,
            };
            if !taken {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, ssl);
    }
    let Some(pairs) = key_value_pairs(url) else {
        return (url.to_string(), SslSettings::default());
    };
    let mut kept = Vec::new();
    for (key, value, text) in pairs {
        if !ssl.take(key, value) {
            kept.push(text);
        }
    }
    (kept.join(" "), ssl)
}

/// The settings of a `key=value` connection string: each key, its value unquoted, and
/// the text it was written as. `None` when the string is not of that form.
fn key_value_pairs(s: &str) -> Option<Vec<(&str, String, &str)>> {
    let mut pairs = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    let skip_space = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_space(i);
        if i == bytes.len() {
            return Some(pairs);
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[start..i];
        i = skip_space(i);
        if key.is_empty() || bytes.get(i) != Some(&b'=') {
            return None;
        }
        i = skip_space(i + 1);
        let mut value = String::new();
        let quoted = bytes.get(i) == Some(&b'\'');
        if quoted {
            i += 1;
        }
        loop {
            let Some(c) = s[i..].chars().next() else {
                if quoted {
                    return None;
                }
                break;
            };
            match c {
                '\\' => {
                    let escaped = s[i + 1..].chars().next()?;
                    value.push(escaped);
                    i += 1 + escaped.len_utf8();
                }
                '\'' if quoted => {
                    i += 1;
                    break;
                }
                c if !quoted && c.is_ascii_whitespace() => break,
                c => {
                    value.push(c);
                    i += c.len_utf8();
                }
            }
        }
        pairs.push((key, value, &s[start..i]));
    }
}

/// The roots a verifying mode trusts: the PEM file `sslrootcert` names, the platform's
/// with `sslrootcert=system`, else `~/.postgresql/root.crt` as libpq reads.
fn roots(rootcert: Option<&str>, mode: &str) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    match rootcert {
        Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(Error::InvalidUrl(
                    "sslrootcert=system: this machine has no trusted root certificates (install ca-certificates)".into(),
                ));
            }
        }
        Some(path) => add_pem_roots(&mut store, Path::new(path), "sslrootcert")?,
        None => {
            let default = std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".postgresql/root.crt"))
                .filter(|path| path.exists())
                .ok_or_else(|| {
                    Error::InvalidUrl(format!(
                        "sslmode={mode} checks the server's certificate and needs the roots to trust: \
                         give sslrootcert=<PEM file> (or sslrootcert=system for this machine's), \
                         or use sslmode=require to encrypt without checking"
                    ))
                })?;
            add_pem_roots(&mut store, &default, "sslrootcert")?;
        }
    }
    Ok(store)
}

fn add_pem_roots(store: &mut RootCertStore, path: &Path, setting: &str) -> Result<(), Error> {
    let certs = pem_certificates(path, setting)?;
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(Error::InvalidUrl(format!(
            "{setting}: {} holds no certificate rustls can use",
            path.display()
        )));
    }
    Ok(())
}

fn pem_certificates(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let unreadable = |e: &dyn fmt::Display| {
        Error::InvalidUrl(format!("{setting}: cannot read {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(&e))?;
    if certs.is_empty() {
        return Err(Error::InvalidUrl(format!(
            "{setting}: {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

type ClientCertificate = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_certificate(cert: &str, key: &str) -> Result<ClientCertificate, Error> {
    let certs = pem_certificates(Path::new(cert), "sslcert")?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        Error::InvalidUrl(format!("sslkey: cannot read a private key from {key}: {e}"))
    })?;
    Ok((certs, key))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn connector(
    verify: Verify,
    roots: Option<RootCertStore>,
    client_cert: Option<ClientCertificate>,
) -> Result<MakeRustlsConnect, Error> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidUrl(format!("TLS: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (verify, roots) {
        (Verify::Nothing, _) | (_, None) => Arc::new(AnyCertificate { provider }),
        (verify, Some(roots)) => {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::InvalidUrl(format!("sslrootcert: {e}")))?;
            if verify == Verify::Full {
                webpki
            } else {
                Arc::new(ChainOnly { webpki })
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client_cert {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| Error::InvalidUrl(format!("sslcert/sslkey: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    // What PostgreSQL 17's direct TLS negotiation asks for; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(MakeRustlsConnect::new(config))
}

/// `prefer` and `require`: any certificate, though the handshake must still be signed
/// by the key of the certificate shown.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `verify-ca`: webpki's checks but the name. Its name check comes after the chain's,
/// so a wrong name means the chain was good.
#[derive(Debug)]
struct ChainOnly {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mode: &str, rootcert: Option<&str>) -> SslSettings {
        SslSettings {
            mode: Some(mode.into()),
            rootcert: rootcert.map(Into::into),
            ..SslSettings::default()
        }
    }

    #[test]
    fn takes_the_ssl_settings_out_of_a_url() {
        let (rest, ssl) = take_ssl_settings(
            "postgres://u:p%3F@db.example:5433/app?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca%20root.crt",
        );
        assert_eq!(
            rest,
            "postgres://u:p%3F@db.example:5433/app?application_name=x"
        );
        assert_eq!(ssl, settings("verify-full", Some("/tmp/ca root.crt")));
        let (rest, ssl) = take_ssl_settings("postgresql://h/db?sslmode=require");
        assert_eq!(rest, "postgresql://h/db");
        assert_eq!(ssl, settings("require", None));
        let (rest, ssl) = take_ssl_settings("postgres://h/db");
        assert_eq!(
            (rest.as_str(), ssl),
            ("postgres://h/db", SslSettings::default())
        );
    }

    #[test]
    fn takes_the_ssl_settings_out_of_a_key_value_string() {
        let (rest, ssl) = take_ssl_settings(
            "host=db.example  sslmode = verify-ca password='it''s' sslrootcert='/tmp/my ca.crt' user=a\\ b",
        );
        // libpq writes a quote inside quotes as \'; '' is two strings: not our form.
        assert_eq!(ssl, SslSettings::default());
        assert!(rest.contains("it''s"));
        let (rest, ssl) = take_ssl_settings(
            "host=db.example  sslmode = verify-ca password='it\\'s' sslrootcert='/tmp/my ca.crt' user=a\\ b",
        );
        assert_eq!(rest, "host=db.example password='it\\'s' user=a\\ b");
        assert_eq!(ssl, settings("verify-ca", Some("/tmp/my ca.crt")));
        let parsed: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(parsed.get_password(), Some(&b"it's"[..]));
        assert_eq!(parsed.get_user(), Some("a b"));
    }

    #[test]
    fn maps_each_sslmode() {
        let mode =
            |url: &str| ConnectConfig::parse(url).map(|c| (c.postgres.get_ssl_mode(), c.verify()));
        assert_eq!(mode("host=h").unwrap(), (SslMode::Prefer, Verify::Nothing));
        assert_eq!(
            mode("host=h sslmode=disable").unwrap(),
            (SslMode::Disable, Verify::Nothing)
        );
        assert_eq!(
            mode("host=h sslmode=allow").unwrap(),
            (SslMode::Prefer, Verify::Nothing)
        );
        assert_eq!(
            mode("host=h sslmode=require").unwrap(),
            (SslMode::Require, Verify::Nothing)
        );
        let Err(Error::InvalidUrl(message)) = mode("host=h sslmode=verify") else {
            panic!("sslmode=verify was accepted");
        };
        assert!(message.contains("not \"verify\""), "{message}");
        let Err(Error::InvalidUrl(message)) =
            mode("host=h sslmode=verify-full sslrootcert=/nonexistent/ca.crt")
        else {
            panic!("a missing root file was accepted");
        };
        assert!(
            message.starts_with("sslrootcert: cannot read /nonexistent/ca.crt"),
            "{message}"
        );
        let Err(Error::InvalidUrl(message)) = mode("host=h sslcert=/tmp/c.crt") else {
            panic!("sslcert without sslkey was accepted");
        };
        assert!(message.contains("go together"), "{message}");
    }
}
