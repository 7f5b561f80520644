//! The CLI as a user runs it: `serve` on the embedded default (first-start key and
//! curl line, then 1,000 events over a real port), `keys create`, `send` and `metrics`
//! against the running server's cluster, `worker`, `--help`, and bad input.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use triggers_tests::{free_port, run, triggers, wait_for, wait_until, Server, TempDir};

const EXIT: Duration = Duration::from_secs(60);

fn output_of(args: &[&str], data_dir: &std::path::Path) -> std::process::Output {
    let mut command = triggers(args);
    command.arg("--data-dir").arg(data_dir);
    run(command, EXIT)
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["worker", "--help"],
        vec!["keys", "create", "--help"],
        vec!["send", "--help"],
        vec!["metrics", "--help"],
    ] {
        let output = run(triggers(&args), EXIT);
        assert!(output.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage: triggers"),
            "{args:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn first_start_prints_a_working_key_and_a_thousand_events_flow_end_to_end() {
    let tmp = TempDir::new("cli_e2e");
    let data_dir = tmp.join("data");
    let mut command = triggers(&["serve", "--workers", "2", "--listen"]);
    command
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&data_dir);
    let mut server = Server::start_with_lines(command, 6);
    let key = server
        .banner_lines
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("trg_")
                .map(|rest| format!("trg_{rest}"))
        })
        .expect("the first start prints a key");
    assert!(
        server
            .banner_lines
            .iter()
            .any(|l| l.contains("curl -s") && l.contains(&key)),
        "{:?}",
        server.banner_lines
    );
    assert!(
        server
            .banner_lines
            .iter()
            .any(|l| l.contains(&format!("Dashboard: open {}/", server.url))),
        "{:?}",
        server.banner_lines
    );

    let http = reqwest::Client::new();
    let auth = format!("Bearer {key}");
    let started = Instant::now();
    for chunk in 0..10 {
        let events: Vec<Value> = (0..100)
            .map(|i| json!({"payload": {"n": chunk * 100 + i}}))
            .collect();
        let reply = http
            .post(format!("{}/events/batch", server.url))
            .header("authorization", &auth)
            .json(&json!({ "events": events }))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
    }
    // All 1,000 reach the inbox as pending: the workers process them unprompted. (How
    // soon after the POST is a benchmark: triggers-http-load's "POST → visible".)
    let pending: Vec<String> = wait_for("1,000 events pending in the inbox", || async {
        let mut pending = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}/inbox?status=pending&limit=1000", server.url);
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page: Value = http
                .get(url)
                .header("authorization", &auth)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            pending.extend(
                page["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["event_id"].as_str().unwrap().to_string()),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        if pending.len() >= 1000 {
            Ok(pending)
        } else {
            Err(format!("{} pending", pending.len()))
        }
    })
    .await;
    for id in &pending {
        let reply = http
            .post(format!("{}/inbox/{id}/ack", server.url))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
    }
    let metrics: Value = http
        .get(format!("{}/metrics", server.url))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metrics["data"]["delivered"], 1000, "{metrics}");
    assert_eq!(metrics["data"]["pending"], 0);
    eprintln!(
        "1,000 events posted, stored, read and acked in {:?}",
        started.elapsed()
    );

    // One-shot commands use the running server's cluster in place.
    let created = output_of(&["keys", "create", "--tenant", "cli"], &data_dir);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let cli_key = String::from_utf8_lossy(&created.stdout).trim().to_string();
    assert!(cli_key.starts_with("trg_"));
    let sent = output_of(
        &[
            "send",
            r#"{"from":"cli"}"#,
            "--tenant",
            "cli",
            "--metadata",
            r#"{"m":1}"#,
        ],
        &data_dir,
    );
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let sent: Value = serde_json::from_slice(&sent.stdout).unwrap();
    let id = sent["event_id"].as_str().unwrap();
    wait_until("the sent event processed", || async {
        http.get(format!("{}/events/{id}", server.url))
            .header("authorization", format!("Bearer {cli_key}"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    let metrics = output_of(&["metrics", "--tenant", "cli"], &data_dir);
    let metrics: Value = serde_json::from_slice(&metrics.stdout).unwrap();
    assert_eq!(metrics["total"], 1);

    assert!(server.stop_with(libc::SIGTERM, EXIT).success());
    // A later start is not a first start: no new key is printed.
    let server = Server::start_with_lines(
        {
            let mut c = triggers(&["serve", "--listen"]);
            c.arg(format!("127.0.0.1:{}", free_port()))
                .arg("--data-dir")
                .arg(&data_dir);
            c
        },
        1,
    );
    assert!(!server.banner_lines.iter().any(|l| l.contains("trg_")));
}

#[test]
fn send_refuses_bad_input_with_one_line() {
    let tmp = TempDir::new("cli_bad");
    let data_dir = tmp.join("data");
    for (payload, needle) in [
        ("not json", "is not JSON"),
        ("[1]", "invalid payload"),
        (
            r#"{"a":["\u0000"]}"#,
            "payload.a[0] contains a NUL character",
        ),
        (
            r#"{"n":1e999999}"#,
            "payload.n is a number Postgres cannot store",
        ),
        (r#"{"n":1e400}"#, ""),
        ("{}", ""),
    ] {
        let output = output_of(&["send", payload], &data_dir);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if needle.is_empty() {
            assert!(output.status.success(), "{stderr}");
            continue;
        }
        assert_eq!(output.status.code(), Some(1), "{payload}: {stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("triggers: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(needle), "{payload}: {stderr}");
    }
    let output = output_of(&["keys", "create", "--tenant", ""], &data_dir);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("tenant"));
}

/// Logs are JSON, every line of a request carries its correlation id, and even at
/// `RUST_LOG=debug` no line carries an API key (tokio-postgres logs statement
/// parameters at debug level).
#[tokio::test(flavor = "multi_thread")]
async fn debug_logs_carry_the_correlation_id_and_never_an_api_key() {
    let tmp = TempDir::new("cli_logs");
    let mut command = triggers(&["serve", "--workers", "1", "--listen"]);
    command
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(tmp.join("data"))
        .env("RUST_LOG", "debug");
    let mut server = Server::start_with_lines(command, 6);
    let key = server
        .banner_lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("trg_").map(|r| format!("trg_{r}")))
        .expect("the first start prints a key");
    let reply = reqwest::Client::new()
        .post(format!("{}/events", server.url))
        .header("authorization", format!("Bearer {key}"))
        .header("x-correlation-id", "log-check-1")
        .body(r#"{"payload":{"secret_order":7}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    // Stop once the request's last line is written and a worker has processed the
    // event (its statements, parameters included, are logged at debug level too).
    let logged = |logs: &[String]| {
        let done = logs
            .iter()
            .any(|l| l.contains("log-check-1") && l.contains("request done"));
        let processed = logs.iter().any(|l| {
            serde_json::from_str::<Value>(l)
                .is_ok_and(|v| v["fields"]["message"] == "batch" && v["fields"]["stored"] == 1)
        });
        done && processed
    };
    wait_for("the 'request done' and 'batch' lines", || async {
        let logs = server.logs();
        if logged(&logs) {
            Ok(())
        } else {
            Err(format!("{logs:#?}"))
        }
    })
    .await;
    server.stop_with(libc::SIGTERM, Duration::from_secs(60));

    let logs = server.logs();
    let request_lines: Vec<&String> = logs.iter().filter(|l| l.contains("log-check-1")).collect();
    assert!(
        request_lines.iter().any(|l| l.contains("request done")),
        "a 'request done' line with the correlation id in: {logs:#?}"
    );
    for line in &logs {
        let _: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(!line.contains(&key), "an API key in the logs: {line}");
    }
}
