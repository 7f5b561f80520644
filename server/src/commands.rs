//! The one-shot commands: `keys create`, `endpoints create|list|rotate-secret|delete`,
//! `send`, `metrics`, and `tail`, which follows the live stream. Each uses DATABASE_URL, or
//! the embedded cluster: in place when a `triggers serve` runs it, else started for
//! the command and stopped after.

use futures_util::StreamExt;
use triggers_client::{LiveFilter, NewEvent};

use crate::cli::{DbArgs, EndpointsCommand, KeysCommand, MetricsArgs, SendArgs, TailArgs};
use crate::db;
use crate::error::StartupError;
use crate::render::ts;

fn failed(e: triggers_client::Error) -> StartupError {
    StartupError::Command(e.to_string())
}

async fn with_database<T>(
    args: &DbArgs,
    run: impl AsyncFnOnce(&triggers_client::Client) -> Result<T, StartupError>,
) -> Result<T, StartupError> {
    let mut database = db::open(args, true, db::Role::Calls).await?;
    let result = run(&database.client).await;
    if let Some(cluster) = database.cluster.as_mut() {
        cluster.stop();
    }
    result
}

/// `triggers keys create`
pub async fn keys(command: KeysCommand) -> Result<(), StartupError> {
    match command {
        KeysCommand::Create {
            tenant,
            name,
            expires_at,
            db,
        } => {
            let key = with_database(&db, async |c| {
                c.create_expiring_api_key(&tenant, &name, expires_at)
                    .await
                    .map_err(failed)
            })
            .await?;
            println!("{key}");
            eprintln!("API key for tenant '{tenant}' ({name}); it is not stored anywhere in plaintext, keep it now.");
            Ok(())
        }
    }
}

/// `triggers endpoints ...`
pub async fn endpoints(command: EndpointsCommand) -> Result<(), StartupError> {
    let print = |value: serde_json::Value| println!("{value}");
    match command {
        EndpointsCommand::Create {
            url,
            tenant,
            stream,
            metadata,
            description,
            db,
        } => {
            let mut filter = serde_json::Map::new();
            if let Some(stream) = stream {
                filter.insert("stream".into(), stream.into());
            }
            if let Some(metadata) = &metadata {
                filter.insert("metadata".into(), json_object("--metadata", metadata)?);
            }
            let filter = (!filter.is_empty()).then_some(serde_json::Value::Object(filter));
            let created = with_database(&db, async |c| {
                c.create_endpoint(&tenant, &url, filter.as_ref(), description.as_deref())
                    .await
                    .map_err(failed)
            })
            .await?;
            print(
                serde_json::json!({"endpoint_id": created.endpoint_id, "secret": created.secret}),
            );
            eprintln!("Webhook endpoint for tenant '{tenant}': {url}. Verify deliveries with the secret; it is shown only now.");
        }
        EndpointsCommand::List { tenant, db } => {
            let endpoints =
                with_database(&db, async |c| c.endpoints(&tenant).await.map_err(failed)).await?;
            for e in endpoints {
                print(serde_json::json!({
                    "endpoint_id": e.endpoint_id, "url": e.url, "filter": e.filter,
                    "description": e.description, "enabled": e.enabled,
                    "disabled_reason": e.disabled_reason,
                    "rotating_until": e.rotating_until.as_ref().map(ts),
                    "created_at": ts(&e.created_at),
                }));
            }
        }
        EndpointsCommand::RotateSecret { id, tenant, db } => {
            let secret = with_database(&db, async |c| {
                c.rotate_endpoint_secret(&tenant, id).await.map_err(failed)
            })
            .await?;
            print(serde_json::json!({"endpoint_id": id, "secret": secret}));
            eprintln!("The previous secret keeps signing beside this one for 24 hours.");
        }
        EndpointsCommand::Delete { id, tenant, db } => {
            let existed = with_database(&db, async |c| {
                c.delete_endpoint(&tenant, id).await.map_err(failed)
            })
            .await?;
            if !existed {
                return Err(StartupError::Command(format!(
                    "tenant '{tenant}' has no endpoint {id}"
                )));
            }
            print(serde_json::json!({"endpoint_id": id, "deleted": true}));
        }
    }
    Ok(())
}

fn json_object(what: &str, text: &str) -> Result<serde_json::Value, StartupError> {
    serde_json::from_str(text)
        .map_err(|e| StartupError::Command(format!("{what} is not JSON: {e}")))
}

/// `triggers send`
pub async fn send(args: SendArgs) -> Result<(), StartupError> {
    let mut event =
        NewEvent::new(json_object("the payload", &args.payload)?).tenant(args.tenant.as_str());
    if let Some(metadata) = &args.metadata {
        event = event.metadata(json_object("--metadata", metadata)?);
    }
    if let Some(key) = &args.idempotency_key {
        event = event.idempotency_key(key.as_str());
    }
    if let Some(stream) = &args.stream {
        event = event.stream(stream.as_str());
    }
    let sent = with_database(&args.db, async |c| c.enqueue(&event).await.map_err(failed)).await?;
    println!(
        "{}",
        serde_json::json!({"event_id": sent.event_id, "duplicate": sent.duplicate})
    );
    Ok(())
}

/// `triggers metrics`
pub async fn metrics(args: MetricsArgs) -> Result<(), StartupError> {
    let m = with_database(&args.db, async |c| {
        c.metrics(args.tenant.as_deref()).await.map_err(failed)
    })
    .await?;
    let text =
        serde_json::to_string_pretty(&m).map_err(|e| StartupError::Command(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// `triggers tail`
pub async fn tail(args: TailArgs) -> Result<(), StartupError> {
    let mut filter = LiveFilter::tenant(args.tenant.as_str());
    filter.stream = args.stream.clone();
    with_database(&args.db, async |c| {
        let events = c.subscribe(filter, args.from);
        futures_util::pin_mut!(events);
        let mut printed = 0u64;
        while args.count.is_none_or(|n| printed < n) {
            let Some(next) = events.next().await else {
                break;
            };
            let stored = next.map_err(failed)?;
            let mut line = crate::render::event_json(&stored.event);
            line["position"] = serde_json::Value::from(stored.position.0);
            println!("{line}");
            printed += 1;
        }
        Ok(())
    })
    .await
}
