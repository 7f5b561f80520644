//! TLS to Postgres (issue 16): a cluster whose certificate is signed by a CA made here
//! (rcgen), naming `localhost` only. The role the tests connect as may only connect over
//! TLS (pg_hba `hostssl`; `hostnossl … reject`), so every connection that works proves
//! TLS; `pg_stat_ssl` shows it too. Each sslmode does what libpq's does: `verify-full`
//! refuses a certificate of another CA and one that does not name the host, `verify-ca`
//! accepts the latter, `require` checks nothing; a client certificate logs in a role
//! with `cert` authentication. Then `triggers serve` and `triggers keys create` run over
//! `sslmode=verify-full`: an event POSTed is processed (the workers and their LISTEN
//! connections over TLS too), and every one of the server's sessions is encrypted.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{json, Value};
use triggers_client::Client;
use triggers_tests::{free_port, run, triggers, wait_until, ExternalCluster, Server, TempDir};

const ROLE: &str = "tls_user";
const CERT_ROLE: &str = "tls_client";
const PASSWORD: &str = "tls-password";

/// A CA: its certificate (PEM) and what signs with it.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A certificate for `names` with common name `common_name`, signed by `ca`: (cert PEM,
/// key PEM).
fn leaf(ca: &Ca, common_name: &str, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Writes `text` to `path`, mode 0600, owned as `like` is (the cluster's user reads
/// its key; Postgres refuses a key others can read).
fn write_owned(path: &Path, text: &str, like: &Path) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let owner = std::fs::metadata(like).unwrap();
    std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid())).unwrap();
}

/// The cluster in `dir` with TLS on (server certificate for `localhost` by `ca`),
/// [`ROLE`] allowed over TLS only and [`CERT_ROLE`] by client certificate only.
async fn tls_cluster(dir: &Path, ca: &Ca) -> ExternalCluster {
    {
        let plain = ExternalCluster::start(dir).await;
        let db = triggers_tests::connect(&plain.config()).await;
        db.batch_execute(&format!(
            "CREATE ROLE {ROLE} LOGIN SUPERUSER PASSWORD '{PASSWORD}';
             CREATE ROLE {CERT_ROLE} LOGIN;
             GRANT USAGE ON SCHEMA triggers TO {CERT_ROLE};"
        ))
        .await
        .unwrap();
    }
    let (cert, key) = leaf(ca, "localhost", &["localhost"]);
    write_owned(&dir.join("server.crt"), &cert, dir);
    write_owned(&dir.join("server.key"), &key, dir);
    write_owned(&dir.join("root.crt"), &ca.pem, dir);
    let conf = dir.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(
        "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'root.crt'\n",
    );
    std::fs::write(&conf, text).unwrap();
    // First match wins: the test roles over TLS only; the cluster's own role as before
    // (the embedded code connects as it, without TLS).
    let hba = dir.join("pg_hba.conf");
    let rest = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!(
            "hostssl all {CERT_ROLE} 127.0.0.1/32 cert\n\
             hostssl all {ROLE} 127.0.0.1/32 scram-sha-256\n\
             host all {CERT_ROLE},{ROLE} all reject\n\
             {rest}"
        ),
    )
    .unwrap();
    ExternalCluster::start(dir).await
}

/// Whether this client's session is encrypted, and the user it is: by asking Postgres.
async fn session(client: &Client) -> Result<(bool, String), String> {
    let conn = client.pool().get().await.map_err(|e| error_text(&e))?;
    let row = conn
        .query_one(
            "SELECT ssl, current_user::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((row.get(0), row.get(1)))
}

/// An error with its causes (the TLS reason sits under the driver's "error performing TLS
/// handshake").
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn connect_with(url: &str) -> Result<(bool, String), String> {
    let client = Client::connect(url).map_err(|e| e.to_string())?;
    session(&client).await
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_sslmode_against_a_cluster_with_a_private_ca() {
    let tmp = TempDir::new("tls");
    let ours = ca("triggers test CA");
    let theirs = ca("another CA");
    let cluster = tls_cluster(&tmp.join("db"), &ours).await;
    let port = cluster.config().get_ports()[0];
    let root = tmp.join("root.crt");
    std::fs::write(&root, &ours.pem).unwrap();
    let other_root = tmp.join("other.crt");
    std::fs::write(&other_root, &theirs.pem).unwrap();
    let url = |host: &str, query: &str| {
        format!("postgres://{ROLE}:{PASSWORD}@{host}:{port}/triggers?{query}")
    };
    let verify_full = format!("sslmode=verify-full&sslrootcert={}", path(&root));

    // verify-full: the chain and the name.
    assert_eq!(
        connect_with(&url("localhost", &verify_full)).await,
        Ok((true, ROLE.to_string()))
    );
    let wrong_name = connect_with(&url("127.0.0.1", &verify_full))
        .await
        .unwrap_err();
    assert!(
        wrong_name.contains("not valid for name"),
        "verify-full with a certificate for another name: {wrong_name}"
    );
    let unknown = connect_with(&url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", path(&other_root)),
    ))
    .await
    .unwrap_err();
    assert!(
        unknown.contains("UnknownIssuer"),
        "verify-full trusting another CA: {unknown}"
    );

    // verify-ca: the chain, not the name; require: nothing, but encrypted.
    assert_eq!(
        connect_with(&url(
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={}", path(&root))
        ))
        .await,
        Ok((true, ROLE.to_string()))
    );
    let unknown = connect_with(&url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", path(&other_root)),
    ))
    .await
    .unwrap_err();
    assert!(
        unknown.contains("UnknownIssuer"),
        "verify-ca, another CA: {unknown}"
    );
    assert_eq!(
        connect_with(&url("127.0.0.1", "sslmode=require")).await,
        Ok((true, ROLE.to_string()))
    );
    // The default (prefer) encrypts when the server offers it.
    assert_eq!(
        connect_with(&url("127.0.0.1", "")).await,
        Ok((true, ROLE.to_string()))
    );
    // disable: plain, which this role may not use.
    let plain = connect_with(&url("127.0.0.1", "sslmode=disable"))
        .await
        .unwrap_err();
    assert!(plain.contains("no encryption"), "sslmode=disable: {plain}");

    // The key=value form, and a client certificate for a role that logs in by it.
    let (cert, key) = leaf(&ours, CERT_ROLE, &[]);
    let (cert_file, key_file) = (tmp.join("client.crt"), tmp.join("client.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let by_certificate = format!(
        "host=localhost port={port} dbname=triggers user={CERT_ROLE} sslmode=verify-full \
         sslrootcert='{}' sslcert='{}' sslkey='{}'",
        path(&root),
        path(&cert_file),
        path(&key_file)
    );
    assert_eq!(
        connect_with(&by_certificate).await,
        Ok((true, CERT_ROLE.to_string()))
    );
    let without = connect_with(&format!(
        "host=localhost port={port} dbname=triggers user={CERT_ROLE} sslmode=verify-full sslrootcert='{}'",
        path(&root)
    ))
    .await
    .unwrap_err();
    assert!(
        without.contains("certificate"),
        "no client certificate: {without}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_and_the_cli_over_verify_full() {
    let tmp = TempDir::new("tls-serve");
    let ours = ca("triggers test CA");
    let cluster = tls_cluster(&tmp.join("db"), &ours).await;
    let port = cluster.config().get_ports()[0];
    let root: PathBuf = tmp.join("root.crt");
    std::fs::write(&root, &ours.pem).unwrap();
    let url = format!(
        "postgres://{ROLE}:{PASSWORD}@localhost:{port}/triggers?sslmode=verify-full&sslrootcert={}",
        path(&root)
    );

    let mut keys = triggers(&["keys", "create", "--tenant", "tls"]);
    keys.env("DATABASE_URL", &url);
    let made = run(keys, Duration::from_secs(60));
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let api_key = String::from_utf8_lossy(&made.stdout).trim().to_string();

    let mut command = triggers(&["serve"]);
    command.env("DATABASE_URL", &url).args([
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--data-dir",
        &path(&tmp.join("unused")),
    ]);
    let server = Server::start(command);
    let http = reqwest::Client::new();
    let sent: Value = http
        .post(format!("{}/events", server.url))
        .bearer_auth(&api_key)
        .json(&json!({"payload": {"over": "tls"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = sent["data"]["event_id"]
        .as_str()
        .expect("an event id")
        .to_string();
    wait_until("the event processed over TLS", || async {
        let event: Value = http
            .get(format!("{}/events/{id}", server.url))
            .bearer_auth(&api_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        event["data"]["status"] == "pending"
    })
    .await;

    // Every session of the server is encrypted (and there are several: pool, workers,
    // listeners).
    let admin = Client::connect(&url).unwrap();
    let conn = admin.pool().get().await.unwrap();
    let row = conn
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
               FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.usename = $1",
            &[&ROLE],
        )
        .await
        .unwrap();
    let (encrypted, plain): (i64, i64) = (row.get(0), row.get(1));
    assert!(encrypted >= 3, "{encrypted} encrypted sessions");
    assert_eq!(plain, 0);
    drop(server);

    // A root file that is not there: one clear line, exit 1, before anything starts.
    let mut command = triggers(&["serve", "--listen", &format!("127.0.0.1:{}", free_port())]);
    command.env(
        "DATABASE_URL",
        format!("postgres://{ROLE}:{PASSWORD}@localhost:{port}/triggers?sslmode=verify-full&sslrootcert=/nonexistent/root.crt"),
    );
    let output = run(command, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("sslrootcert: cannot read /nonexistent/root.crt"),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    drop(cluster);
}
