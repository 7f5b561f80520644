//! How calls reach the database: the [`Exec`] trait over a caller's connection or
//! transaction ([`Plain`], through [`on`]) or a pooled connection, and [`On`], the
//! handle the SQL API's methods (ops.rs) hang on.

use std::future::Future;

use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row};

use crate::error::Error;

pub(crate) type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

/// How calls reach the database: [`Plain`] prepares each statement per call (any
/// connection or transaction of the caller's); a pooled connection of [`crate::Client`]
/// prepares each statement once per connection and reuses it.
pub trait Exec: Sync {
    /// Runs `sql`, expecting exactly one row.
    fn one<'a>(
        &'a self,
        sql: &'a str,
        params: Params<'a>,
    ) -> impl Future<Output = Result<Row, Error>> + Send + 'a;
    /// Runs `sql`, returning every row.
    fn all<'a>(
        &'a self,
        sql: &'a str,
        params: Params<'a>,
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send + 'a;
}

/// A caller's connection or transaction, as an [`Exec`].
pub struct Plain<'c, C>(&'c C);

impl<C: GenericClient + Sync> Exec for Plain<'_, C> {
    async fn one<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Result<Row, Error> {
        Ok(self.0.query_one(sql, params).await?)
    }
    async fn all<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Result<Vec<Row>, Error> {
        Ok(self.0.query(sql, params).await?)
    }
}

impl Exec for deadpool_postgres::Object {
    async fn one<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Result<Row, Error> {
        let statement = self.prepare_cached(sql).await?;
        Ok(self.query_one(&statement, params).await?)
    }
    async fn all<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Result<Vec<Row>, Error> {
        let statement = self.prepare_cached(sql).await?;
        Ok(self.query(&statement, params).await?)
    }
}

/// The SQL API over an [`Exec`]. Get one with [`on`] for your own connection or
/// transaction; [`crate::Client`]'s methods use one over a pooled connection.
pub struct On<E> {
    pub(crate) conn: E,
}

/// The SQL API on `conn`: a `tokio_postgres::Client` or `Transaction`. Calls run in
/// whatever transaction `conn` is in.
///
/// ```no_run
/// # async fn outbox(db: &mut tokio_postgres::Client) -> Result<(), triggers_client::Error> {
/// use triggers_client::{on, NewEvent};
/// let tx = db.transaction().await?;
/// tx.execute("UPDATE orders SET state = 'paid' WHERE id = 42", &[]).await?;
/// on(&tx).enqueue(&NewEvent::new(serde_json::json!({"order": 42, "state": "paid"}))).await?;
/// tx.commit().await?; // both or neither
/// # Ok(())
/// # }
/// ```
pub fn on<C: GenericClient + Sync>(conn: &C) -> On<Plain<'_, C>> {
    On { conn: Plain(conn) }
}
