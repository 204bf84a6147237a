//! Keys from the FoundationDB tuple layer, so the keyspace is byte-identical on every
//! backend. Re-exports what callers need and adds range helpers.

pub use foundationdb_tuple::{
    Element, PackError, Subspace, TuplePack, TupleUnpack, Versionstamp, pack, unpack,
};

/// The range `[prefix, strinc(prefix))`: every key that starts with `prefix`.
pub fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (prefix.to_vec(), strinc(prefix))
}

/// The first key after every key starting with `prefix` (FoundationDB's `strinc`): drops
/// trailing `0xff` bytes and increments the last remaining byte. An all-`0xff` or empty
/// prefix has no successor; the result is then `[0xff; 1]` past the whole keyspace.
pub fn strinc(prefix: &[u8]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    while let Some(&last) = out.last() {
        if last == 0xff {
            out.pop();
        } else {
            let n = out.len();
            out[n - 1] = last + 1;
            return out;
        }
    }
    vec![0xff, 0xff]
}

/// The key right after `key` in order (`key` followed by a zero byte).
pub fn key_after(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.extend_from_slice(key);
    out.push(0);
    out
}

/// Packs `tuple` (which must hold exactly one [`Versionstamp::incomplete`]) under
/// `subspace` for [`crate::Transaction::set_versionstamped_key`].
pub fn versionstamped<T: TuplePack>(subspace: &Subspace, tuple: &T) -> Vec<u8> {
    subspace.pack_with_versionstamp(tuple)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strinc_increments_last_non_ff_byte() {
        assert_eq!(strinc(b"ab"), b"ac".to_vec());
        assert_eq!(strinc(&[1, 0xff, 0xff]), vec![2]);
    }

    #[test]
    fn tuple_order_matches_byte_order() {
        let a = pack(&("task", 1i64, "a"));
        let b = pack(&("task", 2i64, "a"));
        let c = pack(&("task", 10i64, "a"));
        assert!(a < b && b < c);
    }
}
