//! Encoding of stored records: MessagePack with field names, so records stay readable by
//! later versions that add fields (every new field has a serde default).

use serde::{Serialize, de::DeserializeOwned};

use crate::EngineError;

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, EngineError> {
    rmp_serde::to_vec_named(value)
        .map_err(|e| EngineError::Corrupt(format!("could not encode a record: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, EngineError> {
    rmp_serde::from_slice(bytes).map_err(|e| {
        EngineError::Corrupt(format!(
            "stored {what} could not be decoded ({e}); the data may come from an incompatible version"
        ))
    })
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
