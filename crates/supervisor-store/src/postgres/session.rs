//! A pooled connection lent to one transaction, and the guarantee that it goes back to the
//! pool outside any SQL transaction.
//!
//! Why this exists: a store transaction keeps a SQL transaction open on its connection (its
//! read snapshot) and may be dropped at any point without an async hand-back. A connection
//! returned to the pool inside an open SQL transaction would hand its stale snapshot to the
//! next user — silently, since `BEGIN` inside a transaction is only a warning. So a session
//! that ends inside a SQL transaction rolls it back on a spawned task before the connection
//! is reused, and if that cannot happen (no runtime, the task is dropped, the rollback
//! fails) it closes the connection instead of returning it.

use deadpool_postgres::{ClientWrapper, Object};

use super::sql;

/// A pooled connection and whether a SQL transaction may be open on it.
pub(crate) struct Session {
    client: Option<Object>,
    in_txn: bool,
}

impl Session {
    /// Wraps a connection fresh from the pool (outside any SQL transaction).
    pub(crate) fn new(client: Object) -> Self {
        Session {
            client: Some(client),
            in_txn: false,
        }
    }

    /// The connection.
    pub(crate) fn client(&self) -> &ClientWrapper {
        // `client` is only `None` inside `drop`.
        self.client
            .as_deref()
            .unwrap_or_else(|| unreachable!("a session's connection is gone before its drop"))
    }

    /// Records whether a SQL transaction may be open: set it before sending `BEGIN`, clear
    /// it only once `COMMIT` or `ROLLBACK` has been answered.
    pub(crate) fn set_in_txn(&mut self, in_txn: bool) {
        self.in_txn = in_txn;
    }

    /// Whether a SQL transaction may be open.
    pub(crate) fn in_txn(&self) -> bool {
        self.in_txn
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if !self.in_txn {
            // Back to the pool as it is.
            return;
        }
        let guard = DiscardUnlessReleased(Some(client));
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let mut guard = guard;
                    let rolled_back = match guard.0.as_ref() {
                        Some(client) => client.batch_execute(sql::ROLLBACK).await.is_ok(),
                        None => false,
                    };
                    if rolled_back {
                        // Clean again: back to the pool.
                        drop(guard.0.take());
                    }
                });
            }
            // No runtime to roll back on: the guard closes the connection.
            Err(_) => drop(guard),
        }
    }
}

/// Closes the connection it holds when dropped (taking it out of the pool), unless the
/// connection was taken out of it first.
struct DiscardUnlessReleased(Option<Object>);

impl Drop for DiscardUnlessReleased {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            // Dropping the detached client closes the connection.
            drop(Object::take(client));
        }
    }
}
