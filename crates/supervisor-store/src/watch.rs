//! The client half of a watch, shared by every backend.
//!
//! Why this exists: a watch is created inside a transaction but becomes active only when
//! that transaction commits, and what its future resolves to depends on how the
//! transaction ended (committed, failed, dropped) and on whether the store is still open.
//! Those rules are part of the store's contract, so they live here once; each backend
//! keeps only its own registry of active watches and decides when they fire.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::oneshot;

use crate::{StoreError, Watch};

/// The sending half of one watch.
pub(crate) type WatchSender = oneshot::Sender<Result<(), StoreError>>;

/// A watch created in a transaction that has not committed yet.
pub(crate) struct PendingWatch {
    /// The watched key.
    pub(crate) key: Vec<u8>,
    sender: WatchSender,
    activated: Arc<AtomicBool>,
}

impl PendingWatch {
    /// Creates a pending watch and the [`Watch`] future the caller awaits.
    ///
    /// The future resolves with `Ok(())` when it fires, with the commit's error when its
    /// transaction fails to commit, and with [`StoreError::Closed`] when the store shuts down
    /// while it is active. If its transaction is dropped without committing it never fires.
    pub(crate) fn new(key: &[u8]) -> (PendingWatch, Watch) {
        let (sender, receiver) = oneshot::channel();
        let activated = Arc::new(AtomicBool::new(false));
        let flag = activated.clone();
        let watch = Watch::new(async move {
            match receiver.await {
                Ok(result) => result,
                // The registry dropped it: the store shut down.
                Err(_) if flag.load(Ordering::Acquire) => Err(StoreError::Closed),
                // Its transaction was dropped without committing: it never fires.
                Err(_) => std::future::pending().await,
            }
        });
        (
            PendingWatch {
                key: key.to_vec(),
                sender,
                activated,
            },
            watch,
        )
    }

    /// Marks the watch active (its transaction committed) and hands over its key and the
    /// sender a registry fires it with. From now on, dropping the sender resolves the
    /// watch with [`StoreError::Closed`].
    pub(crate) fn activate(self) -> (Vec<u8>, WatchSender) {
        self.activated.store(true, Ordering::Release);
        (self.key, self.sender)
    }

    /// Resolves the watch with `err` (its transaction failed to commit).
    pub(crate) fn fail(self, err: StoreError) {
        let _ = self.sender.send(Err(err));
    }
}

/// Resolves every watch of a transaction that failed to commit with its error.
pub(crate) fn fail_all(watches: impl IntoIterator<Item = PendingWatch>, err: &StoreError) {
    for watch in watches {
        watch.fail(err.clone());
    }
}
