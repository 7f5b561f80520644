//! How calls reach the database: the [`Exec`] trait over a caller's connection or
//! transaction ([`Plain`], through [`on`]) or a pooled connection, and [`On`], the
//! handle the SQL API's methods (ops.rs) hang on.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// A pooled connection as an [`Exec`]. A call whose future is dropped before it is done
/// (the HTTP client that asked went away, say) cancels its statement on the server, as
/// psql's Ctrl-C does, instead of letting it run to the end on a connection nobody
/// waits for; and that connection leaves the pool rather than going back to it (the
/// cancel request arrives when it arrives: it must not hit the next caller's statement).
pub(crate) struct Pooled {
    conn: Option<deadpool_postgres::Object>,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    busy: AtomicBool,
}

impl Pooled {
    pub(crate) fn new(
        conn: deadpool_postgres::Object,
        tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    ) -> Pooled {
        Pooled {
            conn: Some(conn),
            tls,
            busy: AtomicBool::new(false),
        }
    }

    fn conn(&self) -> &deadpool_postgres::Object {
        self.conn
            .as_ref()
            .expect("a pooled connection until dropped")
    }

    /// Runs `call` marked busy: if it is dropped unfinished, [`Drop`] cancels it.
    async fn busy<T>(&self, call: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        self.busy.store(true, Ordering::SeqCst);
        let result = call.await;
        self.busy.store(false, Ordering::SeqCst);
        result
    }
}

impl Exec for Pooled {
    async fn one<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Result<Row, Error> {
        self.busy(async {
            let statement = self.conn().prepare_cached(sql).await?;
            Ok(self.conn().query_one(&statement, params).await?)
        })
        .await
    }
    async fn all<'a>(&'a self, sql: &'a str, params: Params<'a>) -> Result<Vec<Row>, Error> {
        self.busy(async {
            let statement = self.conn().prepare_cached(sql).await?;
            Ok(self.conn().query(&statement, params).await?)
        })
        .await
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if !*self.busy.get_mut() {
            return;
        }
        let (Some(conn), Ok(runtime)) = (self.conn.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let client = deadpool_postgres::Object::take(conn);
        let token = client.cancel_token();
        let tls = self.tls.take();
        runtime.spawn(async move {
            // A cancel that fails leaves the statement to run to its end (or to its
            // statement_timeout); nothing more to do about it here.
            let _ = match tls {
                Some(tls) => token.cancel_query(tls).await,
                None => token.cancel_query(tokio_postgres::NoTls).await,
            };
            drop(client);
        });
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
