//! `GET /metrics/prometheus` as Prometheus reads it: parsed by a text-format parser and
//! held to the format's rules (every family typed, counters named `_total`, histogram
//! buckets cumulative up to `+Inf` = `_count`); each counter follows one tenant's events
//! exactly and another tenant's key sees none of them; `promtool check metrics` has no
//! complaint; the Grafana dashboard in `docs/` asks only for series the exposition has.

use std::collections::{BTreeMap, BTreeSet};

use prometheus_parse::{Scrape, Value};
use triggers_tests::api::Api;
use triggers_tests::{connect, wait_until};

/// POSTs an event (`query` after `/events`) and returns its id.
async fn send(api: &Api, key: &str, query: &str, body: &str) -> String {
    let reply = api
        .call("POST", &format!("/events{query}"), Some(key), Some(body))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body["data"]["event_id"].as_str().unwrap().to_string()
}

/// Processes until `dlq_count` of `tenant` is `n`.
async fn process_until_dead_letters(api: &Api, tenant: &str, n: i64) {
    wait_until("the dead letters", || async {
        api.client.process_batch(None, None).await.unwrap();
        api.client.metrics(Some(tenant)).await.unwrap().dlq_count == n
    })
    .await;
}

/// Prometheus's own linter, `promtool check metrics` (Debian's `prometheus`, installed by
/// the test command), finds nothing to say about `text`.
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus; scripts/setup.sh --with-promtool)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The format's rules, checked line by line (the parser is lenient): what each family
/// is, in the order declared; every sample belongs to a declared family.
fn check_format(text: &str) -> BTreeMap<String, String> {
    let mut families = BTreeMap::new();
    let mut helped = BTreeSet::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(helped.insert(name.to_string()), "HELP {name} twice");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(valid_name(name), "{name}");
            assert!(helped.contains(name), "TYPE {name} without HELP before it");
            assert!(
                ["counter", "gauge", "histogram", "summary"].contains(&kind),
                "{name}: {kind}"
            );
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            }
            assert!(
                families
                    .insert(name.to_string(), kind.to_string())
                    .is_none(),
                "TYPE {name} twice"
            );
        } else {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| families.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(
                families.contains_key(family),
                "sample {name} of no declared family"
            );
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}: value");
        }
    }
    families
}

#[tokio::test(flavor = "multi_thread")]
async fn the_exposition_parses_and_its_counters_follow_each_event() {
    let api = Api::new("prometheus").await;
    connect(&api.config)
        .await
        .batch_execute(
            "UPDATE triggers.config SET max_retries = 1, backoff_base_ms = 1, backoff_cap_ms = 1",
        )
        .await
        .unwrap();
    let key = api.key("acme").await;
    let other = api.key("other").await;

    // Five events queued (a repeated idempotency key is not a new one): three stored,
    // one failing until it is dead-lettered after one retry, one routed straight to
    // the dead-letter queue.
    let plain = send(
        &api,
        &key,
        "",
        r#"{"payload":{"n":1},"idempotency_key":"k"}"#,
    )
    .await;
    send(
        &api,
        &key,
        "",
        r#"{"payload":{"n":1},"idempotency_key":"k"}"#,
    )
    .await;
    send(&api, &key, "", r#"{"payload":{"n":2}}"#).await;
    send(&api, &key, "", r#"{"payload":{"n":3}}"#).await;
    let failing = send(&api, &key, "?debug=processing_error", r#"{"payload":{}}"#).await;
    send(&api, &key, "?debug=dlq_routing", r#"{"payload":{}}"#).await;
    process_until_dead_letters(&api, "acme", 2).await;
    api.call("POST", &format!("/inbox/{plain}/ack"), Some(&key), None)
        .await;
    // A manual retry (no debug flag this time: it is stored), then a redrive of the other.
    api.call("POST", &format!("/inbox/{failing}/retry"), Some(&key), None)
        .await;
    process_until_dead_letters(&api, "acme", 1).await;
    wait_until("the retried event stored", || async {
        api.client.process_batch(None, None).await.unwrap();
        api.client.metrics(Some("acme")).await.unwrap().pending == 3
    })
    .await;
    api.call("POST", "/dlq/redrive", Some(&key), None).await;

    let prom = api
        .call("GET", "/metrics/prometheus", Some(&key), None)
        .await;
    assert_eq!(prom.status, 200);
    let families = check_format(&prom.text);
    promtool_accepts(&prom.text);
    let scrape = Scrape::parse(prom.text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == name
                    && s.labels.get("tenant") == Some("acme")
                    && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v))
            })
            .unwrap_or_else(|| panic!("no {name} {label:?} in\n{}", prom.text));
        match sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{name}: {:?}", sample.value),
        }
    };
    for (name, want) in [
        ("enqueued", 5.0),
        ("stored", 4.0),
        ("retried", 3.0),
        ("dead_lettered", 2.0),
        ("acknowledged", 1.0),
    ] {
        let name = format!("triggers_events_{name}_total");
        assert_eq!(families[&name], "counter");
        assert_eq!(value(&name, None), want, "{name}\n{}", prom.text);
    }
    let m = api.client.metrics(Some("acme")).await.unwrap();
    assert_eq!(
        value("triggers_events", Some(("status", "pending"))),
        m.pending as f64
    );
    assert_eq!(
        value("triggers_events", Some(("status", "delivered"))),
        m.delivered as f64
    );
    assert_eq!(value("triggers_queue_depth", None), m.queue_depth as f64);
    assert_eq!(value("triggers_dlq_messages", None), m.dlq_count as f64);

    let histogram = "triggers_processing_latency_seconds";
    assert_eq!(families[histogram], "histogram");
    let buckets = scrape
        .samples
        .iter()
        .find_map(|s| match &s.value {
            Value::Histogram(b)
                if s.metric == histogram && s.labels.get("tenant") == Some("acme") =>
            {
                Some(b.clone())
            }
            _ => None,
        })
        .expect("the histogram's buckets");
    assert!(buckets.len() > 10, "{buckets:?}");
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count),
        "{buckets:?}"
    );
    let last = buckets.last().unwrap();
    assert!(last.less_than.is_infinite(), "+Inf last: {buckets:?}");
    assert_eq!(last.count, 4.0, "every stored event's latency");
    assert_eq!(value(&format!("{histogram}_count"), None), 4.0);
    assert!(value(&format!("{histogram}_sum"), None) > 0.0);

    // Another tenant's key: the same families, none of acme's numbers.
    let theirs = api
        .call("GET", "/metrics/prometheus", Some(&other), None)
        .await;
    assert_eq!(check_format(&theirs.text), families);
    assert!(!theirs.text.contains("acme"), "{}", theirs.text);
    assert!(
        theirs
            .text
            .contains("triggers_events_enqueued_total{tenant=\"other\"} 0"),
        "{}",
        theirs.text
    );

    // The Grafana dashboard reads only series the exposition has.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/grafana-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut asked = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("triggers_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                asked.insert(name);
            }
        }
    }
    assert!(asked.len() >= 10, "{asked:?}");
    for name in &asked {
        assert!(
            prom.text
                .lines()
                .any(|l| l.starts_with(&format!("{name}{{"))),
            "the dashboard asks for {name}, which the exposition lacks"
        );
    }
}
