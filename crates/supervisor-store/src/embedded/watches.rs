//! The registry of active watches.
//!
//! Why this exists: a watch must fire after any later commit that writes its key, and must
//! never miss one. The writer thread fires watches after each durable batch; a committing
//! transaction activates its watches by comparing the key's current committed value with
//! the value it saw, under the same lock the writer fires under. Either the activation sees
//! the new value (and fires at once), or it registers before the writer's firing pass (and
//! is fired by it): no change can slip between the two.
//!
//! Like FoundationDB's, a watch may fire spuriously (the key was rewritten with the same
//! value) and may miss a change that was undone before it became active (the ABA case).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use crate::StoreError;
use crate::watch::{PendingWatch, WatchSender};

/// After this many registrations, sweep the whole registry for cancelled watches.
const SWEEP_EVERY: usize = 1024;

#[derive(Default)]
struct Inner {
    by_key: BTreeMap<Vec<u8>, Vec<WatchSender>>,
    registrations_since_sweep: usize,
    closed: bool,
}

/// Every active watch, by key.
#[derive(Default)]
pub(crate) struct WatchRegistry {
    inner: Mutex<Inner>,
}

/// The registry, locked: activation happens while this is held.
pub(crate) struct Locked<'a>(MutexGuard<'a, Inner>);

impl WatchRegistry {
    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the registry for activating watches.
    pub(crate) fn lock(&self) -> Locked<'_> {
        Locked(self.lock_inner())
    }

    /// Fires every watch on one of `keys` or inside one of `ranges`.
    pub(crate) fn fire<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
        ranges: impl IntoIterator<Item = (&'k [u8], &'k [u8])>,
    ) {
        let mut inner = self.lock_inner();
        if inner.by_key.is_empty() {
            return;
        }
        let mut fired: Vec<WatchSender> = Vec::new();
        for key in keys {
            if let Some(senders) = inner.by_key.remove(key) {
                fired.extend(senders);
            }
        }
        for (begin, end) in ranges {
            let hit: Vec<Vec<u8>> = inner
                .by_key
                .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)))
                .map(|(k, _)| k.clone())
                .collect();
            for key in hit {
                if let Some(senders) = inner.by_key.remove(&key) {
                    fired.extend(senders);
                }
            }
        }
        drop(inner);
        for sender in fired {
            let _ = sender.send(Ok(()));
        }
    }

    /// Shuts the registry: every active watch resolves with [`StoreError::Closed`], and
    /// later activations fail the same way.
    pub(crate) fn close(&self) {
        let mut inner = self.lock_inner();
        inner.closed = true;
        let all = std::mem::take(&mut inner.by_key);
        drop(inner);
        drop(all);
    }

    /// Number of registered watches (including cancelled ones not swept yet).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock_inner().by_key.values().map(Vec::len).sum()
    }
}

impl Locked<'_> {
    /// Activates `watch`: fires it now if `changed`, otherwise registers it.
    pub(crate) fn activate(&mut self, watch: PendingWatch, changed: bool) {
        let (key, sender) = watch.activate();
        if self.0.closed {
            let _ = sender.send(Err(StoreError::Closed));
            return;
        }
        if changed {
            let _ = sender.send(Ok(()));
            return;
        }
        let inner = &mut *self.0;
        let list = inner.by_key.entry(key).or_default();
        list.retain(|s| !s.is_closed());
        list.push(sender);
        inner.registrations_since_sweep += 1;
        if inner.registrations_since_sweep >= SWEEP_EVERY {
            inner.registrations_since_sweep = 0;
            inner.by_key.retain(|_, senders| {
                senders.retain(|s| !s.is_closed());
                !senders.is_empty()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn fires_keys_and_ranges_and_sweeps_cancelled_watches() {
        let registry = WatchRegistry::default();
        let (a, wa) = PendingWatch::new(b"a");
        let (m, wm) = PendingWatch::new(b"m");
        let (z, wz) = PendingWatch::new(b"z");
        {
            let mut locked = registry.lock();
            locked.activate(a, false);
            locked.activate(m, false);
            locked.activate(z, false);
        }
        registry.fire([&b"a"[..]], [(&b"l"[..], &b"n"[..])]);
        assert_eq!(wa.now_or_never(), Some(Ok(())));
        assert_eq!(wm.now_or_never(), Some(Ok(())));
        drop(wz);
        for _ in 0..SWEEP_EVERY {
            let (w, fut) = PendingWatch::new(b"q");
            drop(fut);
            registry.lock().activate(w, false);
        }
        assert!(registry.len() <= 1);
        registry.close();
        let (late, fut) = PendingWatch::new(b"x");
        registry.lock().activate(late, false);
        assert_eq!(fut.now_or_never(), Some(Err(StoreError::Closed)));
    }
}
