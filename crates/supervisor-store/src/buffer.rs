//! A transaction's buffered writes, kept in a shape that answers reads; shared by every
//! backend that buffers writes on the client (embedded, PostgreSQL).
//!
//! Why this exists: the store promises read-your-writes, so every read merges the snapshot
//! with what the transaction has written so far. Instead of replaying an operation log on
//! each read, the buffer keeps the net effect: a set of cleared ranges that hide the
//! snapshot, and per-key entries (a value, a removal, or a pending atomic add) on top. The
//! same net effect is what a backend applies at commit: first the cleared ranges, then the
//! entries, then the versionstamped keys — which is equivalent to applying the operations
//! in their original order (see [`WriteBuffer`] for the one exception).

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::KeyValue;
use crate::keys::key_after;

/// What the transaction did to one key, as far as reads are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// The key holds this value (a `set`, or an atomic add onto a value known locally).
    Value(Vec<u8>),
    /// The key was removed.
    Cleared,
    /// `delta` is to be added to whatever the key holds in the snapshot (or at commit).
    Add(i64),
}

/// Adds `delta` to the little-endian integer in `base` the way FoundationDB's `ADD` does for
/// an 8-byte operand: the base is truncated or zero-extended to 8 bytes (absent counts as
/// zero), the sum wraps, and the result is 8 bytes.
pub(crate) fn add_le(base: Option<&[u8]>, delta: i64) -> Vec<u8> {
    let mut bytes = [0u8; 8];
    if let Some(base) = base {
        let n = base.len().min(8);
        bytes[..n].copy_from_slice(&base[..n]);
    }
    let sum = i64::from_le_bytes(bytes).wrapping_add(delta);
    sum.to_le_bytes().to_vec()
}

/// A set of disjoint, non-adjacent half-open byte ranges `[begin, end)`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RangeSet {
    /// begin -> end; ranges never overlap or touch.
    ranges: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl RangeSet {
    /// Adds `[begin, end)`, merging it with every range it overlaps or touches.
    pub(crate) fn insert(&mut self, begin: &[u8], end: &[u8]) {
        if begin >= end {
            return;
        }
        let mut new_begin = begin.to_vec();
        let mut new_end = end.to_vec();
        let touching: Vec<Vec<u8>> = self
            .ranges
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(end)))
            .rev()
            .take_while(|(_, e)| e.as_slice() >= begin)
            .map(|(b, _)| b.clone())
            .collect();
        for b in touching {
            if let Some(e) = self.ranges.remove(&b) {
                if b < new_begin {
                    new_begin = b;
                }
                if e > new_end {
                    new_end = e;
                }
            }
        }
        self.ranges.insert(new_begin, new_end);
    }

    /// The range containing `key`, if any.
    pub(crate) fn containing(&self, key: &[u8]) -> Option<(&[u8], &[u8])> {
        self.ranges
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .filter(|(_, e)| e.as_slice() > key)
            .map(|(b, e)| (b.as_slice(), e.as_slice()))
    }

    /// Whether `[begin, end)` shares a key with one of the ranges.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn overlaps(&self, begin: &[u8], end: &[u8]) -> bool {
        begin < end
            && self
                .ranges
                .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(end)))
                .next_back()
                .is_some_and(|(_, e)| e.as_slice() > begin)
    }

    /// Whether `key` lies in one of the ranges.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.containing(key).is_some()
    }

    /// Every range, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.ranges
            .iter()
            .map(|(b, e)| (b.as_slice(), e.as_slice()))
    }

    /// Whether the set is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// The net effect of a transaction's writes.
///
/// Versionstamped keys are not readable inside the transaction that writes them (their
/// final key is only known at commit) and are applied after the transaction's other writes;
/// a `clear_range` in the same transaction therefore never removes one of its own
/// versionstamped keys.
#[derive(Debug, Default)]
pub(crate) struct WriteBuffer {
    /// Ranges cleared by this transaction: the snapshot is hidden there.
    pub(crate) cleared: RangeSet,
    /// Per-key writes that come after (and so override) the cleared ranges.
    pub(crate) entries: BTreeMap<Vec<u8>, Entry>,
    /// Keys (with their 4-byte offset suffix) and values to stamp at commit, in order.
    pub(crate) versionstamped: Vec<(Vec<u8>, Vec<u8>)>,
}

impl WriteBuffer {
    /// Whether the transaction wrote nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.cleared.is_empty() && self.entries.is_empty() && self.versionstamped.is_empty()
    }

    /// Records `key = value`.
    pub(crate) fn set(&mut self, key: &[u8], value: &[u8]) {
        self.entries
            .insert(key.to_vec(), Entry::Value(value.to_vec()));
    }

    /// Records the removal of `key`.
    pub(crate) fn clear(&mut self, key: &[u8]) {
        self.entries.insert(key.to_vec(), Entry::Cleared);
    }

    /// Records the removal of `[begin, end)`: earlier per-key writes there are superseded.
    pub(crate) fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        if begin >= end {
            return;
        }
        let superseded: Vec<Vec<u8>> = self
            .entries
            .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)))
            .map(|(k, _)| k.clone())
            .collect();
        for k in superseded {
            self.entries.remove(&k);
        }
        self.cleared.insert(begin, end);
    }

    /// Records an atomic add, folding it into what is already known about the key.
    pub(crate) fn atomic_add(&mut self, key: &[u8], delta: i64) {
        let next = match self.entries.get(key) {
            Some(Entry::Value(v)) => Entry::Value(add_le(Some(v), delta)),
            Some(Entry::Cleared) => Entry::Value(add_le(None, delta)),
            Some(Entry::Add(d)) => Entry::Add(d.wrapping_add(delta)),
            None if self.cleared.contains(key) => Entry::Value(add_le(None, delta)),
            None => Entry::Add(delta),
        };
        self.entries.insert(key.to_vec(), next);
    }

    /// Records a versionstamped key.
    pub(crate) fn set_versionstamped(&mut self, key_with_offset: &[u8], value: &[u8]) {
        self.versionstamped
            .push((key_with_offset.to_vec(), value.to_vec()));
    }

    /// What the buffer says about `key`: `Some(Some(v))` a known value, `Some(None)` known
    /// absent, `None` the snapshot decides (with a pending add reported by [`Self::pending_add`]).
    pub(crate) fn known(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        match self.entries.get(key) {
            Some(Entry::Value(v)) => Some(Some(v.as_slice())),
            Some(Entry::Cleared) => Some(None),
            Some(Entry::Add(_)) => None,
            None if self.cleared.contains(key) => Some(None),
            None => None,
        }
    }

    /// The pending atomic add on `key` whose base is the snapshot value, if any.
    pub(crate) fn pending_add(&self, key: &[u8]) -> Option<i64> {
        match self.entries.get(key) {
            Some(Entry::Add(d)) => Some(*d),
            _ => None,
        }
    }

    /// The value this transaction sees at `key` when the buffer alone does not decide it
    /// ([`Self::known`] is `None`): the snapshot's value `base` with the pending atomic add,
    /// if any, applied.
    pub(crate) fn over_snapshot(&self, key: &[u8], base: Option<Vec<u8>>) -> Option<Vec<u8>> {
        match self.pending_add(key) {
            Some(delta) => Some(add_le(base.as_deref(), delta)),
            None => base,
        }
    }
}

/// Replaces the placeholder of a versionstamped key and strips its 4-byte offset suffix.
/// Returns `None` when the offset does not fit in the key.
pub(crate) fn stamp_key(key_with_offset: &[u8], stamp: &[u8; 10]) -> Option<Vec<u8>> {
    let body_len = key_with_offset.len().checked_sub(4)?;
    let mut offset_bytes = [0u8; 4];
    offset_bytes.copy_from_slice(&key_with_offset[body_len..]);
    let offset = usize::try_from(u32::from_le_bytes(offset_bytes)).ok()?;
    let end = offset.checked_add(stamp.len())?;
    if end > body_len {
        return None;
    }
    let mut key = key_with_offset[..body_len].to_vec();
    key[offset..end].copy_from_slice(stamp);
    Some(key)
}

/// The read conflict range of a range read of `[begin, end)` that returned `out`: the
/// whole range, unless the read was cut short by its limit, in which case it only depends
/// on the keys up to the last one returned (from it, for a reverse read).
pub(crate) fn range_read_conflict(
    begin: &[u8],
    end: &[u8],
    out: &[KeyValue],
    limit: usize,
    reverse: bool,
) -> (Vec<u8>, Vec<u8>) {
    match out.last() {
        Some(last) if out.len() >= limit => {
            if reverse {
                (last.key.clone(), end.to_vec())
            } else {
                (begin.to_vec(), key_after(&last.key))
            }
        }
        _ => (begin.to_vec(), end.to_vec()),
    }
}

/// The versionstamped keys of one transaction with their placeholders filled: the
/// batch's commit `version` in 8 bytes, then the transaction's `order` in its batch in 2,
/// as FoundationDB's commit proxies stamp them. `None` when a placeholder does not fit
/// in its key.
pub(crate) fn stamped_keys(
    versionstamped: &[(Vec<u8>, Vec<u8>)],
    version: u64,
    order: u16,
) -> Option<Vec<(Vec<u8>, &[u8])>> {
    let mut stamp = [0u8; crate::VERSIONSTAMP_BYTES];
    stamp[..8].copy_from_slice(&version.to_be_bytes());
    stamp[8..].copy_from_slice(&order.to_be_bytes());
    versionstamped
        .iter()
        .map(|(key, value)| stamp_key(key, &stamp).map(|k| (k, value.as_slice())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_le_zero_extends_truncates_and_wraps() {
        assert_eq!(add_le(None, 5), 5i64.to_le_bytes().to_vec());
        assert_eq!(add_le(Some(&[1]), 1), 2i64.to_le_bytes().to_vec());
        assert_eq!(
            add_le(Some(&i64::MAX.to_le_bytes()), 1),
            i64::MIN.to_le_bytes().to_vec()
        );
        let long = [1u8, 0, 0, 0, 0, 0, 0, 0, 9, 9];
        assert_eq!(add_le(Some(&long), -1), 0i64.to_le_bytes().to_vec());
    }

    #[test]
    fn range_set_merges_overlapping_and_touching_ranges() {
        let mut set = RangeSet::default();
        set.insert(b"b", b"d");
        set.insert(b"f", b"h");
        set.insert(b"d", b"e");
        assert_eq!(set.iter().count(), 2);
        assert_eq!(set.containing(b"d"), Some((&b"b"[..], &b"e"[..])));
        assert!(!set.contains(b"e"));
        set.insert(b"a", b"z");
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![(&b"a"[..], &b"z"[..])]);
        assert!(!set.contains(b"z"));
        assert!(set.contains(b"a"));
    }

    #[test]
    fn range_set_overlaps_only_ranges_sharing_a_key() {
        let mut set = RangeSet::default();
        set.insert(b"b", b"d");
        set.insert(b"f", b"h");
        assert!(set.overlaps(b"a", b"c"));
        assert!(set.overlaps(b"c", b"g"));
        assert!(set.overlaps(b"g", b"z"));
        assert!(!set.overlaps(b"a", b"b"));
        assert!(!set.overlaps(b"d", b"f"));
        assert!(!set.overlaps(b"h", b"z"));
        assert!(!set.overlaps(b"c", b"c"));
    }

    #[test]
    fn buffer_folds_writes() {
        let mut buf = WriteBuffer::default();
        buf.atomic_add(b"n", 2);
        buf.atomic_add(b"n", 3);
        assert_eq!(buf.pending_add(b"n"), Some(5));
        buf.set(b"k", b"v");
        buf.clear_range(b"a", b"z");
        assert_eq!(buf.known(b"k"), Some(None));
        assert_eq!(buf.pending_add(b"n"), None);
        buf.atomic_add(b"n", 7);
        assert_eq!(buf.known(b"n"), Some(Some(&7i64.to_le_bytes()[..])));
    }

    #[test]
    fn stamp_key_replaces_placeholder() {
        let mut key = b"ab".to_vec();
        key.extend_from_slice(&[0xff; 10]);
        key.push(b'c');
        key.extend_from_slice(&2u32.to_le_bytes());
        let stamped = stamp_key(&key, &[1; 10]).unwrap_or_default();
        let mut expected = b"ab".to_vec();
        expected.extend_from_slice(&[1; 10]);
        expected.push(b'c');
        assert_eq!(stamped, expected);
        assert_eq!(stamp_key(&[0, 0, 0, 0], &[1; 10]), None);
        assert_eq!(stamp_key(&[1, 2], &[1; 10]), None);
    }
}
