//! A sharded layout for tests: node databases (plain `triggers` installs) and a proxy
//! database with `triggers_proxy` over a PL/Proxy cluster named `triggers`, configured
//! the standard way (`CREATE SERVER … FOREIGN DATA WRAPPER plproxy`, a user mapping).

use tokio_postgres::config::Host;

use crate::{connect, empty_database, test_database};

/// Node databases and the proxy over them.
pub struct Sharded {
    /// Each node's settings, in the order partitions go round them.
    pub nodes: Vec<tokio_postgres::Config>,
    /// The proxy database's settings.
    pub proxy: tokio_postgres::Config,
    /// How many PL/Proxy partitions (a power of two, several per node).
    pub partitions: usize,
}

/// `dbname=… host=… port=…` of a database: a partition's entry in the cluster.
pub fn connstr(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_string(),
    };
    format!(
        "dbname={} host={host} port={}",
        config.get_dbname().expect("a database"),
        config.get_ports()[0]
    )
}

impl Sharded {
    /// `nodes` node databases named `<name>_n<i>` in the shared test cluster and a
    /// proxy `<name>_proxy` with `partitions` partitions, partition p on node p % nodes.
    pub async fn new(name: &str, nodes: usize, partitions: usize) -> Sharded {
        let mut configs = Vec::new();
        for i in 0..nodes {
            configs.push(test_database(&format!("{name}_n{i}")).await);
        }
        let proxy = empty_database(&format!("{name}_proxy")).await;
        let user = proxy.get_user().expect("a user").to_string();
        let password =
            String::from_utf8_lossy(proxy.get_password().expect("a password")).into_owned();
        Sharded::over(name, configs, partitions, &user, &password).await
    }

    /// A proxy `<name>_proxy` over these node databases (in any clusters), reaching
    /// them as `user` with `password` (the cluster's user mapping: one for all nodes),
    /// partition p on node p % nodes.
    pub async fn over(
        name: &str,
        nodes: Vec<tokio_postgres::Config>,
        partitions: usize,
        user: &str,
        password: &str,
    ) -> Sharded {
        let proxy = empty_database(&format!("{name}_proxy")).await;
        let sharded = Sharded {
            nodes,
            proxy,
            partitions,
        };
        let entries: Vec<String> = (0..partitions)
            .map(|p| {
                format!(
                    "p{p} '{}'",
                    connstr(&sharded.nodes[p % sharded.nodes.len()])
                )
            })
            .collect();
        connect(&sharded.proxy)
            .await
            .batch_execute(&format!(
                "CREATE EXTENSION plproxy;
                 CREATE SERVER triggers FOREIGN DATA WRAPPER plproxy OPTIONS ({});
                 CREATE USER MAPPING FOR PUBLIC SERVER triggers OPTIONS (user '{user}', password '{password}');
                 CREATE EXTENSION triggers_proxy;",
                entries.join(", ")
            ))
            .await
            .expect("the proxy");
        sharded
    }

    /// The node a tenant's partition is on.
    pub async fn node_of(&self, tenant: &str) -> usize {
        self.nodes_of(&[tenant.to_string()]).await[0]
    }

    /// The node each tenant's partition is on, in order.
    pub async fn nodes_of(&self, tenants: &[String]) -> Vec<usize> {
        let proxy = connect(&self.proxy).await;
        proxy
            .query(
                "SELECT triggers.partition_of(t, $2) FROM unnest($1::text[]) WITH ORDINALITY u(t, n) ORDER BY n",
                &[&tenants, &(self.partitions as i32)],
            )
            .await
            .expect("partition_of")
            .iter()
            .map(|row| row.get::<_, i32>(0) as usize % self.nodes.len())
            .collect()
    }
}
