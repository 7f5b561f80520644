//! The real server, fuzzed from its own `/openapi.json` by Schemathesis (PyPI; installed by
//! scripts/setup.sh): random and boundary values for every parameter, header and body
//! field of every route, valid and invalid, seeded. It holds the server to the document:
//! no response ≥ 500, every status is one the document lists for the route, every body
//! and content type match the document's schema, and the server still answers after.

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;
use triggers_client::{Client, NewEvent};
use triggers_tests::{database_url, free_port, get_json, test_database, triggers, Server};

/// Schemathesis: `$TRIGGERS_SCHEMATHESIS`, or the one scripts/setup.sh installs.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("TRIGGERS_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/schemathesis/bin/schemathesis");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_keeps_to_its_openapi_document_under_fuzzing() {
    let config = test_database("fuzz").await;
    let client = Client::from_config(config.clone(), 2).unwrap();
    let key = client.create_api_key("fuzz", "schemathesis").await.unwrap();
    // Events in every state, so the read routes answer with bodies to check.
    for i in 0..5 {
        client
            .enqueue(
                &NewEvent::new(json!({"i": i, "big": 12345678901234567890u128}))
                    .tenant("fuzz")
                    .stream(if i % 2 == 0 { "s" } else { "t" }),
            )
            .await
            .unwrap();
    }
    client.process_batch(Some(10), None).await.unwrap();

    let mut command = triggers(&["serve"]);
    command
        .env("DATABASE_URL", database_url(&config))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--rate-limit", "0", "--workers", "1"]);
    let mut server = Server::start(command);

    let output = Command::new(schemathesis())
        .arg("run")
        .arg(format!("{}/openapi.json", server.url))
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,negative_data_rejection",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        // The live stream answers 200 and stays open: a request that never ends. Its
        // inputs are tested in tests/tests/live.rs.
        .args(["--exclude-path", "/inbox/stream"])
        .args(["--max-examples", "300", "--seed", "20261124"])
        // One worker: with two threads, CPython 3.11's ast module can fail inside
        // Schemathesis ("AST constructor recursion depth mismatch", seen here once).
        .args([
            "--workers",
            "1",
            "--no-color",
            "--suppress-health-check",
            "all",
        ])
        .args(["--generation-database", "none"])
        .env("SCHEMATHESIS_HOOKS", "")
        // It keeps a cache of crashes in its working directory: not in the repository.
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "schemathesis found the server off its document:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // It really sent a few thousand requests.
    let cases = test_cases(&stdout);
    assert!(cases >= 2000, "only {cases} test cases:\n{stdout}");

    let (status, _, _) = get_json(&format!("{}/ready", server.url)).await;
    assert_eq!(status, 200, "the server is still up and ready");
    let status = server.stop_with(libc::SIGTERM, std::time::Duration::from_secs(30));
    assert!(status.success(), "clean exit after the fuzzing: {status:?}");
}

/// The number of test cases in Schemathesis's summary ("2784 generated, 2784 passed").
fn test_cases(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|line| {
            let (count, rest) = line.trim().split_once(' ')?;
            rest.starts_with("generated").then(|| count.parse().ok())?
        })
        .unwrap_or(0)
}
