//! How the store's contract maps onto FoundationDB's native API, in the parts that need no
//! FoundationDB client library: error codes, the reserved system keyspace, the
//! versionstamped-key layout and the `fdb://` store URL.
//!
//! Why this is apart from the `fdb` backend module: that module links `libfdb_c`, which
//! only machines with FoundationDB installed have. Keeping the pure translation here lets
//! its unit tests run in every build (it is compiled for the `fdb` feature and for tests).

use std::path::PathBuf;

use crate::StoreError;

/// FoundationDB error codes the backend treats specially (from FoundationDB's
/// `error_definitions.h`; stable across releases).
pub(crate) mod code {
    /// `transaction_too_old`: the read version is older than the cluster's MVCC window.
    pub(crate) const TRANSACTION_TOO_OLD: i32 = 1007;
    /// `not_committed`: the transaction conflicted with another one.
    pub(crate) const NOT_COMMITTED: i32 = 1020;
    /// `transaction_cancelled`: the transaction was destroyed, reset or cancelled.
    pub(crate) const TRANSACTION_CANCELLED: i32 = 1025;
    /// `transaction_timed_out`: the transaction's `timeout` option expired.
    pub(crate) const TRANSACTION_TIMED_OUT: i32 = 1031;
    /// `too_many_watches`: the database handle's watch limit is reached.
    pub(crate) const TOO_MANY_WATCHES: i32 = 1032;
    /// `no_cluster_file_found`: no cluster file was named or found in a default place.
    pub(crate) const NO_CLUSTER_FILE_FOUND: i32 = 1515;
    /// `key_outside_legal_range`: a key at or above `\xff` without system-key access.
    pub(crate) const KEY_OUTSIDE_LEGAL_RANGE: i32 = 2004;
    /// `transaction_too_large`: FoundationDB's own size accounting refused the commit.
    pub(crate) const TRANSACTION_TOO_LARGE: i32 = 2101;
    /// `connection_string_invalid`: the cluster file's contents are malformed.
    pub(crate) const CONNECTION_STRING_INVALID: i32 = 2104;
    /// `api_version_not_supported`: the client library is older than the API version.
    pub(crate) const API_VERSION_NOT_SUPPORTED: i32 = 2203;
}

/// A FoundationDB error as the C client reports it: its code, its message, and what the
/// client library's error predicates say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NativeError {
    /// The error code.
    pub(crate) code: i32,
    /// The client library's message for the code.
    pub(crate) message: String,
    /// `fdb_error_predicate(RETRYABLE)`: `on_error` would retry it.
    pub(crate) retryable: bool,
    /// `fdb_error_predicate(MAYBE_COMMITTED)`: a commit that failed with it may have
    /// been applied.
    pub(crate) maybe_committed: bool,
}

/// Maps a FoundationDB error to the store's error, keeping FoundationDB's retry semantics:
/// everything `on_error` would retry becomes a retryable [`StoreError`] (so [`crate::Db::run`]
/// runs the closure again), and nothing else does.
///
/// - `not_committed` is [`StoreError::Conflict`], `transaction_too_old` is
///   [`StoreError::TooOld`];
/// - a maybe-committed error (`commit_unknown_result`, `cluster_version_changed`) is
///   [`StoreError::CommitUnknown`]: closures are idempotent, so running them again is safe;
/// - any other retryable error (`future_version`, `process_behind`, throttling, ...) and
///   `transaction_timed_out` (the backend's own timeout: the cluster did not answer) are
///   [`StoreError::Unavailable`];
/// - everything else is [`StoreError::Io`], with a hint for the errors a caller can fix.
pub(crate) fn store_error(err: &NativeError) -> StoreError {
    let NativeError {
        code,
        message,
        retryable,
        maybe_committed,
    } = err;
    match *code {
        code::NOT_COMMITTED => StoreError::Conflict,
        code::TRANSACTION_TOO_OLD => StoreError::TooOld,
        _ if *maybe_committed => {
            StoreError::CommitUnknown(format!("FoundationDB error {code}: {message}"))
        }
        code::TRANSACTION_TIMED_OUT => StoreError::Unavailable(format!(
            "FoundationDB did not answer within the transaction timeout (error {code}: \
             {message}); check that the cluster is up and reachable (`fdbcli --exec status`)"
        )),
        _ if *retryable => StoreError::Unavailable(format!("FoundationDB error {code}: {message}")),
        code::KEY_OUTSIDE_LEGAL_RANGE => StoreError::Io(format!(
            "FoundationDB error {code}: {message}; keys starting with byte 0xff are \
             FoundationDB's system keyspace and cannot be written: build keys with the \
             tuple layer (supervisor_store::keys)"
        )),
        code::TOO_MANY_WATCHES => StoreError::Io(format!(
            "FoundationDB error {code}: {message}; too many watches are outstanding on this \
             database handle: raise FdbOptions::max_watches or drop watches no longer needed"
        )),
        code::TRANSACTION_TOO_LARGE => StoreError::Io(format!(
            "FoundationDB error {code}: {message}; FoundationDB counts conflict ranges and \
             per-mutation overhead as well as keys and values: split the transaction"
        )),
        _ => StoreError::Io(format!("FoundationDB error {code}: {message}")),
    }
}

/// Where to read about running the store on FoundationDB; named in error messages.
pub(crate) const DOCS: &str = "docs/foundationdb.md";

/// The message for a cluster that cannot be reached through the cluster file `target`.
pub(crate) fn unreachable(target: &str, detail: &str) -> String {
    format!(
        "no FoundationDB cluster reachable via {target}: is fdbserver running? see {DOCS} \
         ({detail})"
    )
}

/// Maps an error of creating the database handle (`fdb_create_database`), which reads the
/// cluster file named `target`. None of them is retryable: the file must be fixed.
pub(crate) fn open_error(code: i32, message: &str, target: &str) -> StoreError {
    match code {
        code::NO_CLUSTER_FILE_FOUND => StoreError::Io(unreachable(
            target,
            "no cluster file was found; name one or set FDB_CLUSTER_FILE",
        )),
        code::CONNECTION_STRING_INVALID => StoreError::Io(format!(
            "the FoundationDB cluster file {target} is malformed ({message}); it holds one \
             line like description:id@127.0.0.1:4500 (see {DOCS})"
        )),
        _ => StoreError::Io(unreachable(target, &format!("error {code}: {message}"))),
    }
}

/// Maps an error of selecting the client API version (once per process).
pub(crate) fn api_error(code: i32, message: &str) -> StoreError {
    if code == code::API_VERSION_NOT_SUPPORTED {
        StoreError::Io(format!(
            "the FoundationDB client library (libfdb_c) is too old for API version 730: \
             install the foundationdb-clients package of FoundationDB 7.3 or later (see {DOCS})"
        ))
    } else {
        StoreError::Io(format!(
            "cannot initialise the FoundationDB client (error {code}: {message})"
        ))
    }
}

/// The first key of FoundationDB's system keyspace. Ordinary transactions may neither read
/// nor write at or above it; no key the store can hold on FoundationDB sorts there.
pub(crate) const SYSTEM_KEYSPACE: &[u8] = b"\xff";

/// Clamps `[begin, end)` to FoundationDB's user keyspace (below [`SYSTEM_KEYSPACE`]) for
/// range reads, range clears and conflict ranges, so that a range reaching past `\xff`
/// (such as [`crate::keys::strinc`] of an empty or `0xff` prefix) covers the same keys
/// as on the other backends instead of failing. `None` when nothing of it is left.
pub(crate) fn user_range<'a>(begin: &'a [u8], end: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
    let end = end.min(SYSTEM_KEYSPACE);
    (begin < end).then_some((begin, end))
}

/// Checks that a key built for [`crate::Transaction::set_versionstamped_key`] is already in
/// the layout FoundationDB's `SET_VERSIONSTAMPED_KEY` takes at API version 520 and later:
/// the key with 10 placeholder bytes somewhere inside, followed by the placeholder's offset
/// as a little-endian `u32`. The contract uses exactly that layout (the tuple layer's
/// `pack_with_versionstamp` writes it), so the key is passed to FoundationDB unchanged;
/// this only re-checks it where the shared layer already has.
pub(crate) fn versionstamp_offset(key_with_offset: &[u8]) -> Option<usize> {
    let body = key_with_offset.len().checked_sub(4)?;
    let mut offset = [0u8; 4];
    offset.copy_from_slice(&key_with_offset[body..]);
    let offset = usize::try_from(u32::from_le_bytes(offset)).ok()?;
    (offset.checked_add(crate::VERSIONSTAMP_BYTES)? <= body).then_some(offset)
}

/// The commit version of a successful commit as the contract reports it: FoundationDB
/// reports -1 for a transaction that wrote nothing (it commits nothing).
pub(crate) fn commit_version(committed_version: i64) -> Option<u64> {
    u64::try_from(committed_version).ok()
}

/// Parses a store URL of the form `fdb://<cluster file path>`: `fdb:///etc/foundationdb/fdb.cluster`
/// names that file; `fdb://` (or `fdb:`) alone means FoundationDB's default (the
/// `FDB_CLUSTER_FILE` environment variable, then `./fdb.cluster`, then
/// `/etc/foundationdb/fdb.cluster`).
pub fn parse_url(url: &str) -> Result<Option<PathBuf>, StoreError> {
    let path = url
        .strip_prefix("fdb://")
        .or_else(|| url.strip_prefix("fdb:"))
        .ok_or_else(|| {
            StoreError::Io(format!(
                "invalid FoundationDB store URL {url:?}: expected fdb://<cluster file>, for \
                 example fdb:///etc/foundationdb/fdb.cluster, or fdb:// for the default \
                 cluster file"
            ))
        })?;
    if path.is_empty() {
        return Ok(None);
    }
    if !path.starts_with('/') {
        return Err(StoreError::Io(format!(
            "invalid FoundationDB store URL {url:?}: the cluster file must be an absolute \
             path (fdb:///etc/foundationdb/fdb.cluster has three slashes), or empty for the \
             default cluster file"
        )));
    }
    Ok(Some(PathBuf::from(path)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Subspace, Versionstamp, versionstamped};

    fn native(code: i32, retryable: bool, maybe_committed: bool) -> NativeError {
        NativeError {
            code,
            message: "msg".into(),
            retryable,
            maybe_committed,
        }
    }

    #[test]
    fn errors_keep_foundationdbs_retry_semantics() {
        // What on_error retries is retryable here, with the most precise variant.
        assert_eq!(
            store_error(&native(code::NOT_COMMITTED, true, false)),
            StoreError::Conflict
        );
        assert_eq!(
            store_error(&native(code::TRANSACTION_TOO_OLD, true, false)),
            StoreError::TooOld
        );
        // commit_unknown_result.
        let unknown = store_error(&native(1021, true, true));
        assert!(matches!(unknown, StoreError::CommitUnknown(ref m) if m.contains("1021")));
        // cluster_version_changed is maybe-committed too.
        assert!(matches!(
            store_error(&native(1039, true, true)),
            StoreError::CommitUnknown(_)
        ));
        // future_version, process_behind, tag_throttled: retryable, not a conflict.
        for code in [1009, 1037, 1213] {
            let err = store_error(&native(code, true, false));
            assert!(
                matches!(err, StoreError::Unavailable(ref m) if m.contains(&code.to_string())),
                "{code}: {err:?}"
            );
            assert!(err.is_retryable());
        }
        // The backend's own timeout: the cluster did not answer; worth retrying.
        let timed_out = store_error(&native(code::TRANSACTION_TIMED_OUT, false, false));
        assert!(timed_out.is_retryable());
        assert!(timed_out.to_string().contains("fdbcli"));
        // What on_error does not retry is not retryable here either.
        for code in [
            code::KEY_OUTSIDE_LEGAL_RANGE,
            code::TOO_MANY_WATCHES,
            code::TRANSACTION_TOO_LARGE,
            code::TRANSACTION_CANCELLED,
            2000,
        ] {
            let err = store_error(&native(code, false, false));
            assert!(matches!(err, StoreError::Io(_)), "{code}: {err:?}");
            assert!(!err.is_retryable());
        }
        assert!(
            store_error(&native(code::KEY_OUTSIDE_LEGAL_RANGE, false, false))
                .to_string()
                .contains("0xff")
        );
        assert!(
            store_error(&native(code::TOO_MANY_WATCHES, false, false))
                .to_string()
                .contains("max_watches")
        );
    }

    #[test]
    fn open_errors_name_the_cluster_file_and_the_fix() {
        let missing = open_error(code::NO_CLUSTER_FILE_FOUND, "msg", "the default file");
        assert!(matches!(missing, StoreError::Io(ref m)
            if m.starts_with("no FoundationDB cluster reachable via the default file: \
                              is fdbserver running? see docs/foundationdb.md")
            && m.contains("FDB_CLUSTER_FILE")));
        let malformed = open_error(code::CONNECTION_STRING_INVALID, "bad", "/x/fdb.cluster");
        assert!(matches!(malformed, StoreError::Io(ref m)
            if m.contains("/x/fdb.cluster is malformed (bad)") && m.contains("@127.0.0.1:4500")));
        let other = open_error(1510, "io_error", "/x/fdb.cluster");
        assert!(matches!(other, StoreError::Io(ref m)
            if m.starts_with("no FoundationDB cluster reachable via /x/fdb.cluster")
            && m.contains("error 1510: io_error")));
        assert!(!other.is_retryable());
        let old = api_error(code::API_VERSION_NOT_SUPPORTED, "msg");
        assert!(old.to_string().contains("7.3 or later"), "{old}");
        assert!(
            api_error(2201, "api_version_already_set")
                .to_string()
                .contains("2201")
        );
    }

    #[test]
    fn ranges_are_clamped_to_the_user_keyspace() {
        assert_eq!(user_range(b"a", b"b"), Some((&b"a"[..], &b"b"[..])));
        assert_eq!(
            user_range(b"a", &[0xff, 0xff]),
            Some((&b"a"[..], &b"\xff"[..]))
        );
        assert_eq!(user_range(b"", &[0xff]), Some((&b""[..], &b"\xff"[..])));
        assert_eq!(
            user_range(&[0xfe, 0xff], &[0xff, 0x00]),
            Some((&[0xfe, 0xff][..], &b"\xff"[..]))
        );
        assert_eq!(user_range(&[0xff], &[0xff, 0xff]), None);
        assert_eq!(user_range(&[0xff, 1], &[0xff, 2]), None);
        assert_eq!(user_range(b"b", b"a"), None);
    }

    #[test]
    fn contract_versionstamped_keys_have_foundationdbs_layout() {
        let space = Subspace::all().subspace(&("log",));
        let key = versionstamped(&space, &(Versionstamp::incomplete(7), "entry"));
        let offset = versionstamp_offset(&key);
        let Some(offset) = offset else {
            panic!("no valid offset in {key:?}");
        };
        // The offset points at the 10 placeholder bytes (the tuple layer writes 0xff), which
        // follow the versionstamp type code 0x33 after the subspace prefix.
        assert_eq!(key[offset - 1], 0x33);
        assert_eq!(&key[offset..offset + 10], &[0xff; 10]);
        // The 2-byte user version follows the placeholder, big-endian.
        assert_eq!(&key[offset + 10..offset + 12], &7u16.to_be_bytes());
        assert_eq!(&key[..offset - 1], space.bytes());
        // Offsets that do not fit are refused.
        assert_eq!(versionstamp_offset(&[1, 2, 3]), None);
        let mut bad = vec![0u8; 12];
        bad.extend_from_slice(&3u32.to_le_bytes());
        assert_eq!(versionstamp_offset(&bad), None);
        let mut fits = vec![0u8; 12];
        fits.extend_from_slice(&2u32.to_le_bytes());
        assert_eq!(versionstamp_offset(&fits), Some(2));
    }

    #[test]
    fn read_only_commits_report_no_version() {
        assert_eq!(commit_version(-1), None);
        assert_eq!(commit_version(0), Some(0));
        assert_eq!(commit_version(123_456_789), Some(123_456_789));
    }

    #[test]
    fn store_urls_name_a_cluster_file_or_the_default() {
        assert_eq!(
            parse_url("fdb:///etc/foundationdb/fdb.cluster"),
            Ok(Some(PathBuf::from("/etc/foundationdb/fdb.cluster")))
        );
        assert_eq!(parse_url("fdb://"), Ok(None));
        assert_eq!(parse_url("fdb:"), Ok(None));
        for bad in [
            "postgres://x",
            "fdb://etc/fdb.cluster",
            "/etc/foundationdb/fdb.cluster",
        ] {
            match parse_url(bad) {
                Err(StoreError::Io(message)) => assert!(message.contains("fdb://"), "{message}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
