//! Watches over `LISTEN`/`NOTIFY`: the registry of active watches and the listener
//! connection that fires them.
//!
//! Why this exists: commits may come from any process using the database, so watches
//! cannot be fired by the committing code as in the embedded backend. Every commit instead
//! sends one notification on [`sql::NOTIFY_CHANNEL`] naming its commit version and the
//! keys and ranges it wrote (see [`encode_changes`]); one listener connection per store
//! receives them — PostgreSQL delivers them in commit order — and fires the matching
//! watches.
//!
//! Never missing a change: a watch is registered with the commit version at which its
//! activation compared the key's current value with what its transaction saw (its *base*).
//! A notification fires only watches whose base is older than the notified commit, so a
//! transaction's own commit never fires its own watch. Because notifications arrive
//! asynchronously, one for a newer commit may be dispatched before the watch registers;
//! the registry therefore keeps a log of recent notifications and checks it at
//! registration. A watch whose base predates what the log or the listener can vouch for
//! (the log was trimmed, the listener reconnected) fires at once: spurious fires are
//! allowed by the contract, missed changes are not. When the listener loses its
//! connection it reconnects and then fires every watch, since changes may have been
//! missed meanwhile.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use futures::future::poll_fn;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls, Notification};

use super::{Phase, connect_error, pg_error, sql};
use crate::StoreError;
use crate::watch::{PendingWatch, WatchSender};

/// Notifications kept for registrations that lag behind the listener.
const LOG_CAPACITY: usize = 1024;
/// After this many registrations, sweep the registry for cancelled watches.
const SWEEP_EVERY: usize = 1024;
/// PostgreSQL refuses notification payloads of 8,000 bytes or more.
const MAX_PAYLOAD: usize = 7_900;
/// Keys longer than this are notified as the range of their prefix of this length.
const MAX_NOTIFIED_KEY: usize = 256;
/// Without a notification for this long, the listener checks its connection.
const PING_AFTER: Duration = Duration::from_secs(10);
/// How long that check may take before the connection counts as lost.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnection backoff of the listener: from the first, doubling up to the second.
const RECONNECT_MIN: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// The listener's `application_name`, to tell its connection apart on the server.
pub(crate) const LISTENER_APPLICATION_NAME: &str = "supervisor-watch-listener";

/// What one commit wrote, as far as watches are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// One key.
    Key(Vec<u8>),
    /// Every key in `[begin, end)`; no end means to the end of the keyspace.
    Range(Vec<u8>, Option<Vec<u8>>),
}

impl Change {
    fn covers(&self, key: &[u8]) -> bool {
        match self {
            Change::Key(k) => k == key,
            Change::Range(begin, end) => {
                key >= begin.as_slice() && end.as_ref().is_none_or(|end| key < end.as_slice())
            }
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Active watches by key, each with its base version.
    by_key: BTreeMap<Vec<u8>, Vec<(u64, WatchSender)>>,
    /// Recent notifications, oldest first, in commit order.
    log: VecDeque<(u64, Vec<Change>)>,
    /// A watch whose base is older than this may have missed a change: it fires at once.
    missed_upto: u64,
    registrations_since_sweep: usize,
    closed: bool,
}

/// Every active watch of one store.
#[derive(Default)]
pub(crate) struct WatchRegistry {
    inner: Mutex<Inner>,
}

impl WatchRegistry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Activates `watch`, whose activation compared values at commit version `base`: fires
    /// it now if `changed` or if a change after `base` may already have gone by, registers
    /// it otherwise.
    pub(crate) fn activate(&self, watch: PendingWatch, changed: bool, base: u64) {
        let (key, sender) = watch.activate();
        let mut inner = self.lock();
        if inner.closed {
            let _ = sender.send(Err(StoreError::Closed));
            return;
        }
        let seen_since = inner
            .log
            .iter()
            .rev()
            .take_while(|(version, _)| *version > base)
            .any(|(_, changes)| changes.iter().any(|c| c.covers(&key)));
        if changed || base < inner.missed_upto || seen_since {
            drop(inner);
            let _ = sender.send(Ok(()));
            return;
        }
        let list = inner.by_key.entry(key).or_default();
        list.retain(|(_, s)| !s.is_closed());
        list.push((base, sender));
        inner.registrations_since_sweep += 1;
        if inner.registrations_since_sweep >= SWEEP_EVERY {
            inner.registrations_since_sweep = 0;
            inner.by_key.retain(|_, list| {
                list.retain(|(_, s)| !s.is_closed());
                !list.is_empty()
            });
        }
    }

    /// Fires the watches that commit `version` changed, and logs the notification.
    pub(crate) fn dispatch(&self, version: u64, changes: Vec<Change>) {
        let mut fired = Vec::new();
        let mut inner = self.lock();
        if inner.closed {
            return;
        }
        let mut take = |list: &mut Vec<(u64, WatchSender)>| {
            let mut i = 0;
            while i < list.len() {
                if list[i].0 < version {
                    fired.push(list.swap_remove(i).1);
                } else {
                    i += 1;
                }
            }
        };
        for change in &changes {
            match change {
                Change::Key(key) => {
                    if let Some(list) = inner.by_key.get_mut(key) {
                        take(list);
                    }
                }
                Change::Range(begin, end) => {
                    let upper = match end {
                        Some(end) => Bound::Excluded(end.as_slice()),
                        None => Bound::Unbounded,
                    };
                    for (_, list) in inner
                        .by_key
                        .range_mut::<[u8], _>((Bound::Included(begin.as_slice()), upper))
                    {
                        take(list);
                    }
                }
            }
        }
        inner.by_key.retain(|_, list| !list.is_empty());
        inner.log.push_back((version, changes));
        while inner.log.len() > LOG_CAPACITY {
            if let Some((dropped, _)) = inner.log.pop_front() {
                inner.missed_upto = inner.missed_upto.max(dropped);
            }
        }
        drop(inner);
        for sender in fired {
            let _ = sender.send(Ok(()));
        }
    }

    /// The listener (re)started listening at commit version `version`: commits up to it
    /// may have gone unseen, so every active watch fires, and so will any later activation
    /// based on an older version.
    pub(crate) fn resync(&self, version: u64) {
        let mut inner = self.lock();
        inner.missed_upto = inner.missed_upto.max(version);
        let all = std::mem::take(&mut inner.by_key);
        drop(inner);
        for (_, list) in all {
            for (_, sender) in list {
                let _ = sender.send(Ok(()));
            }
        }
    }

    /// Fires every active watch (a notification this code cannot read).
    fn fire_all(&self) {
        let all = std::mem::take(&mut self.lock().by_key);
        for (_, list) in all {
            for (_, sender) in list {
                let _ = sender.send(Ok(()));
            }
        }
    }

    /// Shuts the registry: active watches resolve with [`StoreError::Closed`] (their
    /// senders are dropped after activation), and later activations fail the same way.
    pub(crate) fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        let all = std::mem::take(&mut inner.by_key);
        inner.log.clear();
        drop(inner);
        drop(all);
    }

    /// Number of registered watches (including cancelled ones not swept yet).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_key.values().map(Vec::len).sum()
    }
}

// ----------------------------------------------------------------------------------------
// Notification payloads
// ----------------------------------------------------------------------------------------

/// Encodes what commit `version` wrote as a notification payload: the version, then one
/// item per key (`k<hex>`) or range (`r<hex>:<hex>`, an empty end meaning the end of the
/// keyspace), separated by spaces. Long keys become the range of their prefix; a payload
/// that would exceed PostgreSQL's limit becomes one range covering everything written.
/// Both only cause spurious fires, which the contract allows.
pub(crate) fn encode_changes<'a>(
    version: u64,
    keys: impl IntoIterator<Item = &'a [u8]>,
    ranges: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> String {
    let mut payload = version.to_string();
    let mut low: Option<&[u8]> = None;
    let mut high: Option<&[u8]> = None;
    let mut overflow = false;
    let mut note = |begin: &'a [u8], last: &'a [u8]| {
        if low.is_none_or(|l| begin < l) {
            low = Some(begin);
        }
        if high.is_none_or(|h| last > h) {
            high = Some(last);
        }
    };
    for key in keys {
        note(key, key);
        if overflow {
            continue;
        }
        if key.len() > MAX_NOTIFIED_KEY {
            push_range(
                &mut payload,
                &key[..MAX_NOTIFIED_KEY],
                prefix_end(&key[..MAX_NOTIFIED_KEY]).as_deref(),
            );
        } else {
            payload.push_str(" k");
            push_hex(&mut payload, key);
        }
        overflow = payload.len() > MAX_PAYLOAD;
    }
    for (begin, end) in ranges {
        // The range's last key is below `end`; `end` itself is a safe stand-in.
        note(begin, end);
        if overflow {
            continue;
        }
        let begin_cut = &begin[..begin.len().min(MAX_NOTIFIED_KEY)];
        let end_cut = if end.len() > MAX_NOTIFIED_KEY {
            prefix_end(&end[..MAX_NOTIFIED_KEY])
        } else {
            Some(end.to_vec())
        };
        push_range(&mut payload, begin_cut, end_cut.as_deref());
        overflow = payload.len() > MAX_PAYLOAD;
    }
    if overflow && let (Some(low), Some(high)) = (low, high) {
        payload = version.to_string();
        let cut = &high[..high.len().min(MAX_NOTIFIED_KEY)];
        push_range(
            &mut payload,
            &low[..low.len().min(MAX_NOTIFIED_KEY)],
            prefix_end(cut).as_deref(),
        );
    }
    payload
}

/// Decodes a payload written by [`encode_changes`]; `None` if it is not one.
pub(crate) fn decode_changes(payload: &str) -> Option<(u64, Vec<Change>)> {
    let mut items = payload.split(' ');
    let version = items.next()?.parse().ok()?;
    let mut changes = Vec::new();
    for item in items {
        if let Some(hex) = item.strip_prefix('k') {
            changes.push(Change::Key(from_hex(hex)?));
        } else if let Some(range) = item.strip_prefix('r') {
            let (begin, end) = range.split_once(':')?;
            let end = if end.is_empty() {
                None
            } else {
                Some(from_hex(end)?)
            };
            changes.push(Change::Range(from_hex(begin)?, end));
        } else {
            return None;
        }
    }
    Some((version, changes))
}

fn push_range(payload: &mut String, begin: &[u8], end: Option<&[u8]>) {
    payload.push_str(" r");
    push_hex(payload, begin);
    payload.push(':');
    if let Some(end) = end {
        push_hex(payload, end);
    }
}

/// The first key after every key starting with `prefix`; `None` when there is none (the
/// prefix is empty or all `0xff`).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last != 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

// ----------------------------------------------------------------------------------------
// The listener
// ----------------------------------------------------------------------------------------

/// One listening connection: notifications arrive on `notifications` until it is lost.
struct ListenConnection {
    client: tokio_postgres::Client,
    notifications: mpsc::UnboundedReceiver<Notification>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for ListenConnection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl ListenConnection {
    /// Connects, listens, and returns the commit version from which on every commit will
    /// be notified to it.
    async fn open(
        config: &tokio_postgres::Config,
        target: &str,
    ) -> Result<(ListenConnection, u64), StoreError> {
        let (client, mut connection) = config
            .connect(NoTls)
            .await
            .map_err(|err| connect_error(&err, target))?;
        let (sender, notifications) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            loop {
                match poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if sender.send(n).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => {
                        tracing::debug!(error = %err, "watch listener connection failed");
                        return;
                    }
                    None => return,
                }
            }
        });
        let listening = ListenConnection {
            client,
            notifications,
            driver,
        };
        listening
            .client
            .batch_execute(&format!("LISTEN {}", sql::NOTIFY_CHANNEL))
            .await
            .map_err(|err| pg_error(&err, target, Phase::Read))?;
        // Read after LISTEN took effect: every commit after this version is notified.
        let row = listening
            .client
            .query_one(sql::READ_VERSION, &[])
            .await
            .map_err(|err| pg_error(&err, target, Phase::Read))?;
        let version: i64 = row
            .try_get(0)
            .map_err(|err| pg_error(&err, target, Phase::Read))?;
        Ok((listening, u64::try_from(version).unwrap_or(0)))
    }

    /// Fires watches from notifications until the connection is lost.
    async fn pump(&mut self, registry: &WatchRegistry) {
        loop {
            match tokio::time::timeout(PING_AFTER, self.notifications.recv()).await {
                Ok(Some(notification)) => match decode_changes(notification.payload()) {
                    Some((version, changes)) => registry.dispatch(version, changes),
                    None => {
                        tracing::warn!(
                            payload = notification.payload(),
                            "unreadable notification on the store's channel; firing every watch"
                        );
                        registry.fire_all();
                    }
                },
                Ok(None) => return,
                Err(_) => {
                    let ping = tokio::time::timeout(PING_TIMEOUT, self.client.simple_query(""));
                    if !matches!(ping.await, Ok(Ok(_))) {
                        return;
                    }
                }
            }
        }
    }
}

/// Opens the listener's first connection (so that `connect` fails clearly when it cannot,
/// and no watch can be activated before it listens), then runs it on a task that
/// reconnects whenever the connection is lost.
pub(crate) async fn start_listener(
    mut config: tokio_postgres::Config,
    registry: Arc<WatchRegistry>,
    target: String,
) -> Result<tokio::task::JoinHandle<()>, StoreError> {
    config.application_name(LISTENER_APPLICATION_NAME);
    let (first, version) = ListenConnection::open(&config, &target).await?;
    registry.resync(version);
    Ok(tokio::spawn(async move {
        let mut connection = first;
        loop {
            connection.pump(&registry).await;
            drop(connection);
            tracing::warn!(url = %target, "the watch listener lost its connection; reconnecting");
            let mut backoffs = ExponentialBuilder::new()
                .with_min_delay(RECONNECT_MIN)
                .with_factor(2.0)
                .with_max_delay(RECONNECT_MAX)
                .without_max_times()
                .build()
                .map(crate::whole_micros);
            connection = loop {
                tokio::time::sleep(backoffs.next().unwrap_or(RECONNECT_MAX)).await;
                match ListenConnection::open(&config, &target).await {
                    Ok((connection, version)) => {
                        tracing::info!(url = %target, "the watch listener reconnected");
                        registry.resync(version);
                        break connection;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "the watch listener cannot reconnect yet");
                    }
                }
            };
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Watch;
    use futures::FutureExt;

    fn watch(registry: &WatchRegistry, key: &[u8], changed: bool, base: u64) -> Watch {
        let (pending, watch) = PendingWatch::new(key);
        registry.activate(pending, changed, base);
        watch
    }

    #[test]
    fn payloads_round_trip() {
        let keys: Vec<&[u8]> = vec![b"a", &[0, 0xff, 7]];
        let ranges: Vec<(&[u8], &[u8])> = vec![(b"m", b"p")];
        let payload = encode_changes(42, keys, ranges);
        assert_eq!(payload, "42 k61 k00ff07 r6d:70");
        assert_eq!(
            decode_changes(&payload),
            Some((
                42,
                vec![
                    Change::Key(b"a".to_vec()),
                    Change::Key(vec![0, 0xff, 7]),
                    Change::Range(b"m".to_vec(), Some(b"p".to_vec())),
                ]
            ))
        );
        assert_eq!(decode_changes("7"), Some((7, vec![])));
        assert_eq!(decode_changes("x k61"), None);
        assert_eq!(decode_changes("7 k6"), None);
        assert_eq!(decode_changes("7 q61"), None);
    }

    #[test]
    fn long_keys_and_large_commits_are_covered_by_ranges() {
        let long = vec![0xffu8; 10_000];
        let payload = encode_changes(1, [long.as_slice()], []);
        assert!(payload.len() < MAX_PAYLOAD);
        let (_, changes) = decode_changes(&payload).unwrap_or_default();
        assert!(changes.iter().any(|c| c.covers(&long)));

        let keys: Vec<Vec<u8>> = (0..5_000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let payload = encode_changes(
            2,
            keys.iter().map(Vec::as_slice),
            [(&b"\x00\x00\x00\x00\x01"[..], &b"\x00\x00\x00\x00\x02"[..])],
        );
        assert!(payload.len() < MAX_PAYLOAD, "{}", payload.len());
        let (_, changes) = decode_changes(&payload).unwrap_or_default();
        assert_eq!(changes.len(), 1);
        for key in &keys {
            assert!(changes[0].covers(key));
        }
        assert!(!changes[0].covers(&5_000u32.to_be_bytes()));
    }

    #[test]
    fn watches_fire_only_for_newer_commits_and_check_the_log() {
        let registry = WatchRegistry::default();
        registry.resync(10);
        // Its own commit (version 11) does not fire it; a later one does.
        let mut own = watch(&registry, b"k", false, 11);
        registry.dispatch(11, vec![Change::Key(b"k".to_vec())]);
        assert!((&mut own).now_or_never().is_none());
        registry.dispatch(12, vec![Change::Range(b"a".to_vec(), None)]);
        assert_eq!(own.now_or_never(), Some(Ok(())));
        // A notification dispatched before the registration is found in the log...
        registry.dispatch(13, vec![Change::Key(b"late".to_vec())]);
        let late = watch(&registry, b"late", false, 12);
        assert_eq!(late.now_or_never(), Some(Ok(())));
        // ...but not one the registration's base already includes.
        let mut current = watch(&registry, b"late", false, 13);
        assert!((&mut current).now_or_never().is_none());
        // A base older than the listener can vouch for fires at once.
        let old = watch(&registry, b"x", false, 5);
        assert_eq!(old.now_or_never(), Some(Ok(())));
        // A change seen at activation fires at once.
        let changed = watch(&registry, b"y", true, 13);
        assert_eq!(changed.now_or_never(), Some(Ok(())));
        // Reconnecting fires everything.
        registry.resync(20);
        assert_eq!(current.now_or_never(), Some(Ok(())));
        assert_eq!(registry.len(), 0);
        // Closing resolves active watches with Closed.
        let open = watch(&registry, b"z", false, 20);
        registry.close();
        assert_eq!(open.now_or_never(), Some(Err(StoreError::Closed)));
    }

    #[test]
    fn a_trimmed_log_makes_lagging_registrations_fire() {
        let registry = WatchRegistry::default();
        for version in 1..=(LOG_CAPACITY as u64 + 10) {
            registry.dispatch(version, vec![Change::Key(b"other".to_vec())]);
        }
        let lagging = watch(&registry, b"k", false, 3);
        assert_eq!(lagging.now_or_never(), Some(Ok(())));
        let mut recent = watch(&registry, b"k", false, LOG_CAPACITY as u64 + 10);
        assert!((&mut recent).now_or_never().is_none());
    }
}
