//! Encoding of stored records: MessagePack with field names, so records stay readable by
//! later versions that add fields (every new field has a serde default).
//!
//! Large values are stored zstd-compressed: an event whose encoding reaches
//! [`COMPRESS_FROM`] bytes ([`encode_large`]) and output or artifact text that long
//! ([`pack_text`]). A reader tells them apart by the zstd frame's magic number, which
//! neither a MessagePack map (0x80-0x8f, 0xde, 0xdf) nor UTF-8 text (0xb5 cannot follow
//! `(`) ever starts with, so values written before compression existed read as before.

use std::borrow::Cow;

use serde::{Serialize, de::DeserializeOwned};

use crate::EngineError;

/// Values this long or longer are compressed when that makes them smaller.
pub(crate) const COMPRESS_FROM: usize = 2048;

/// The first four bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Largest value a compressed one may expand to: a bound on what a damaged or hostile
/// value can make a reader allocate (outputs and artifacts are far smaller).
const MAX_EXPANDED: usize = 256 * 1024 * 1024;

/// zstd level: the library's default, fast on both ends.
const LEVEL: i32 = 3;

/// `bytes` compressed when it is long enough and compression makes it smaller.
fn compress(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < COMPRESS_FROM {
        return None;
    }
    zstd::bulk::compress(bytes, LEVEL)
        .ok()
        .filter(|c| c.len() < bytes.len())
}

/// The stored form back: decompressed when it is a zstd frame, as it is otherwise.
fn expand<'a>(what: &str, bytes: &'a [u8]) -> Result<Cow<'a, [u8]>, EngineError> {
    if !bytes.starts_with(&ZSTD_MAGIC) {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut out = Vec::new();
    let mut decoder = zstd::stream::read::Decoder::new(bytes).map_err(|e| {
        EngineError::Corrupt(format!("stored {what} could not be decompressed ({e})"))
    })?;
    let read = std::io::Read::read_to_end(
        &mut std::io::Read::take(&mut decoder, MAX_EXPANDED as u64 + 1),
        &mut out,
    );
    match read {
        Ok(n) if n <= MAX_EXPANDED => Ok(Cow::Owned(out)),
        Ok(_) => Err(EngineError::Corrupt(format!(
            "stored {what} expands past {MAX_EXPANDED} bytes; it is damaged"
        ))),
        Err(e) => Err(EngineError::Corrupt(format!(
            "stored {what} could not be decompressed ({e}); it is damaged"
        ))),
    }
}

/// Like [`encode`], compressed when long (events: streamed output can be large).
pub(crate) fn encode_large<T: Serialize>(value: &T) -> Result<Vec<u8>, EngineError> {
    let plain = encode(value)?;
    Ok(compress(&plain).unwrap_or(plain))
}

/// Text as stored: compressed when long and compressible.
pub(crate) fn pack_text(text: &str) -> Cow<'_, [u8]> {
    match compress(text.as_bytes()) {
        Some(c) => Cow::Owned(c),
        None => Cow::Borrowed(text.as_bytes()),
    }
}

/// Stored text back (see [`pack_text`]).
pub(crate) fn unpack_text(what: &str, bytes: &[u8]) -> Result<String, EngineError> {
    let bytes = expand(what, bytes)?;
    String::from_utf8(bytes.into_owned())
        .map_err(|_| EngineError::Corrupt(format!("stored {what} is not UTF-8")))
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, EngineError> {
    rmp_serde::to_vec_named(value)
        .map_err(|e| EngineError::Corrupt(format!("could not encode a record: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, EngineError> {
    let bytes = expand(what, bytes)?;
    rmp_serde::from_slice(&bytes).map_err(|e| {
        EngineError::Corrupt(format!(
            "stored {what} could not be decoded ({e}); the data may come from an incompatible version"
        ))
    })
}

/// A page of records from a range read for one more than `limit`: the first `limit`
/// decoded, and whether more follow them.
pub(crate) fn decode_page<T: DeserializeOwned>(
    what: &str,
    kvs: &[supervisor_store::KeyValue],
    limit: usize,
) -> Result<(Vec<T>, bool), EngineError> {
    let records = kvs
        .iter()
        .take(limit)
        .map(|kv| decode(what, &kv.value))
        .collect::<Result<_, _>>()?;
    Ok((records, kvs.len() > limit))
}

/// Reads a little-endian counter as written by atomic adds.
pub(crate) fn counter(bytes: Option<&[u8]>) -> i64 {
    let mut buf = [0u8; 8];
    if let Some(b) = bytes {
        let n = b.len().min(8);
        buf[..n].copy_from_slice(&b[..n]);
    }
    i64::from_le_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_compressed_and_read_back_and_short_ones_stay_as_they_are() {
        let long = "fn main() { println!(\"hello\"); }\n".repeat(200);
        let packed = pack_text(&long);
        assert!(packed.len() < long.len() / 4);
        assert_eq!(unpack_text("output", &packed).unwrap(), long);
        let short = "a short output";
        assert_eq!(&*pack_text(short), short.as_bytes());
        assert_eq!(unpack_text("output", short.as_bytes()).unwrap(), short);
        // Text that does not shrink is stored as it is.
        let noise: String = (0..4096u32)
            .map(|i| char::from_u32(0x4e00 + (i.wrapping_mul(2_654_435_761) % 20_000)).unwrap())
            .collect();
        assert_eq!(unpack_text("output", &pack_text(&noise)).unwrap(), noise);
        let event = vec![long.clone(); 2];
        let stored = encode_large(&event).unwrap();
        assert!(stored.starts_with(&ZSTD_MAGIC));
        assert_eq!(decode::<Vec<String>>("event", &stored).unwrap(), event);
        assert!(!encode_large(&"x").unwrap().starts_with(&ZSTD_MAGIC));
    }

    #[test]
    fn a_damaged_compressed_value_is_an_error_not_a_panic() {
        let long = "abc".repeat(2000);
        let mut packed = pack_text(&long).into_owned();
        let mid = packed.len() / 2;
        packed.truncate(mid);
        assert!(matches!(
            unpack_text("output", &packed),
            Err(EngineError::Corrupt(_))
        ));
    }
}
