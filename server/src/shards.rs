//! A sharded layout (README → Scale-out): DATABASE_URL is a proxy database with the
//! `triggers_proxy` extension, over a PL/Proxy cluster named `triggers`, and `--nodes`
//! lists the node databases. The API's calls go through the proxy; what needs a node's
//! own session runs on each node: the processing and delivery workers, the live stream's
//! reader (LISTEN; positions are each node's own), the key revocation LISTEN, the queue's
//! bound. [`Shards`] knows which node serves a tenant: its partition (PL/Proxy's,
//! `hashtext(tenant) & (partitions - 1)`, asked of the proxy once per tenant) and the
//! partition's node (read from the cluster's definition, again every few seconds, so a
//! partition moved to another node is followed). One database is a layout of one node
//! ([`Shards::single`]), so what runs per node runs the same way there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use triggers_client::{Client, Error};

/// How often the partition map is read again.
const REFRESH: Duration = Duration::from_secs(2);
/// Tenants whose partition is remembered; past it the memory starts over.
const MAX_TENANTS: usize = 100_000;

/// The nodes and which of them serves each partition.
#[derive(Clone)]
pub struct Shards {
    inner: Arc<Inner>,
}

struct Inner {
    /// The proxy routing the API's calls; none for one database, or for nodes alone.
    proxy: Option<Client>,
    nodes: Vec<Client>,
    /// Partition → index into `nodes`.
    map: RwLock<Vec<usize>>,
    /// Tenant → partition, for the current partition count.
    partitions: Mutex<HashMap<String, usize>>,
}

/// A node's identity as a partition entry names it: host, port, database.
pub fn identity(config: &tokio_postgres::Config) -> (String, u16, String) {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or_default()
        .to_string();
    (host, port, db)
}

impl Shards {
    /// Reads the proxy's cluster and matches each partition to one of `nodes` (same
    /// host, port and database); an error naming the partition that matches none.
    pub async fn discover(proxy: Client, nodes: Vec<Client>) -> Result<Shards, Error> {
        let map = read_map(&proxy, &nodes).await?;
        let shards = Shards {
            inner: Arc::new(Inner {
                proxy: Some(proxy.clone()),
                nodes,
                map: RwLock::new(map),
                partitions: Mutex::new(HashMap::new()),
            }),
        };
        let weak = Arc::downgrade(&shards.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let Some(inner) = weak.upgrade() else { return };
                match read_map(&proxy, &inner.nodes).await {
                    Ok(map) => {
                        let mut current = inner.map.write().unwrap_or_else(|e| e.into_inner());
                        if current.len() != map.len() {
                            inner
                                .partitions
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .clear();
                        }
                        if *current != map {
                            tracing::info!(partitions = map.len(), "the partition map changed");
                        }
                        *current = map;
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot read the partition map"),
                }
            }
        });
        Ok(shards)
    }

    /// Just the nodes, for a worker that runs on each of them and routes nothing (which
    /// node serves a tenant is then unknown: [`Shards::node_of`] errs past one node).
    pub fn nodes_only(nodes: Vec<Client>) -> Shards {
        Shards {
            inner: Arc::new(Inner {
                proxy: None,
                nodes,
                map: RwLock::new(Vec::new()),
                partitions: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// One database: a layout of one node serving every tenant.
    pub fn single(client: Client) -> Shards {
        Shards::nodes_only(vec![client])
    }

    /// Whether calls go through a PL/Proxy proxy to several nodes (then a tenant's node
    /// can change: a partition moved).
    pub fn is_sharded(&self) -> bool {
        self.inner.proxy.is_some()
    }

    /// The node clients, in `--nodes` order.
    pub fn nodes(&self) -> &[Client] {
        &self.inner.nodes
    }

    /// The index of the node serving `tenant` now.
    pub async fn node_of(&self, tenant: &str) -> Result<usize, Error> {
        let Some(proxy) = &self.inner.proxy else {
            return match self.inner.nodes.len() {
                1 => Ok(0),
                _ => Err(Error::Unavailable(
                    "which node serves a tenant is unknown without the proxy".into(),
                )),
            };
        };
        let count = self
            .inner
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        let known = self
            .inner
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .copied();
        let partition = match known {
            Some(p) => p,
            None => {
                let p = proxy.partition_of(tenant, count).await?;
                let mut partitions = self
                    .inner
                    .partitions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if partitions.len() >= MAX_TENANTS {
                    partitions.clear();
                }
                partitions.insert(tenant.to_string(), p);
                p
            }
        };
        let map = self.inner.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(partition)
            .copied()
            .ok_or_else(|| Error::Unavailable("the partition map is changing; retry".into()))
    }
}

/// Partition → node index, from `CREATE SERVER triggers … OPTIONS (p0 '…', …)`.
async fn read_map(proxy: &Client, nodes: &[Client]) -> Result<Vec<usize>, Error> {
    let entries = proxy.partition_entries().await?;
    if entries.is_empty() || !entries.len().is_power_of_two() {
        return Err(Error::InvalidParameter(format!(
            "the proxy's cluster `triggers` has {} partitions; PL/Proxy needs a power of two",
            entries.len()
        )));
    }
    let known: Vec<(String, u16, String)> = nodes
        .iter()
        .map(|n| n.config().map(identity).unwrap_or_default())
        .collect();
    let mut map = Vec::with_capacity(entries.len());
    for (partition, connstr) in entries.iter().enumerate() {
        let config: tokio_postgres::Config = connstr.parse().map_err(|e| {
            Error::InvalidParameter(format!(
                "partition p{partition}: cannot read '{connstr}': {e}"
            ))
        })?;
        let wanted = identity(&config);
        let node = known.iter().position(|k| *k == wanted).ok_or_else(|| {
            Error::InvalidParameter(format!(
                "partition p{partition} is on {}:{} database {}, which is none of --nodes",
                wanted.0, wanted.1, wanted.2
            ))
        })?;
        map.push(node);
    }
    Ok(map)
}
