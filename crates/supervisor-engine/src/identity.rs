//! Tenants, API keys and the audit log, in the store like tasks are, so every node of a
//! cluster agrees on them and a revocation is one transaction.
//!
//! **API keys** look like `svk_<id>_<secret>`: 16 hex digits naming the record
//! (`("apikey", id)`), then 256 random bits. Only a hash of the secret is stored: BLAKE3
//! in keyed mode under a per-cluster key (`("authkey",)`, 32 random bytes made on first
//! use). A slow password hash (argon2id) would buy nothing here: the secret is random and
//! 256 bits long, so guessing it is hopeless however fast the hash, while a slow hash
//! would cost every authenticated RPC milliseconds. The keyed hash still means a copy of
//! the key records alone is useless, and the comparison is constant-time
//! (`blake3::Hash`'s equality), so the time a check takes does not depend on how much of
//! a guessed secret matched. A key's last use is written to its own key
//! (`("apikeyuse", id)`) so that recording it never conflicts with a revocation.
//!
//! **Tenants** are records `("tenant", name)`; `default` always exists.
//!
//! **The audit log** is append-only: `("audit", at_micros, nonce)`, written in batches by
//! the same group commit as submits, and listed newest first.

use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use supervisor_model::{DEFAULT_TENANT, FieldError, Principal, Role, validate_tenant};
use supervisor_store::RangeOptions;

use crate::codec::{decode, encode};
use crate::{Engine, EngineError, Inner, keyspace};

/// Prefix of every API key.
pub const KEY_PREFIX: &str = "svk_";
/// Longest key name, in bytes.
pub const MAX_KEY_NAME_BYTES: usize = 128;

/// An API key as stored (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyInfo {
    /// Its id (the part after `svk_` and before the secret).
    pub id: String,
    /// The tenant it acts in.
    pub tenant: String,
    /// Its role there.
    pub role: Role,
    /// A name for people.
    pub name: String,
    /// When it was made (unix microseconds).
    pub created_at: i64,
    /// Who made it (a principal id).
    pub created_by: String,
    /// When it stops working, if ever.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// When it was revoked, if it was.
    #[serde(default)]
    pub revoked_at: Option<i64>,
    /// When it was last used (recorded at most once a minute per node).
    #[serde(skip)]
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyRecord {
    info: ApiKeyInfo,
    hash: Vec<u8>,
}

/// A key just made: its record, and the key itself, shown this once.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The record.
    pub info: ApiKeyInfo,
    /// `svk_<id>_<secret>`: the only time it exists outside the caller's hands.
    pub key: String,
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantInfo {
    /// Its name.
    pub name: String,
    /// When it was made (0 for the built-in `default`).
    pub created_at: i64,
    /// Who made it.
    pub created_by: String,
}

/// Why a presented key was not accepted. The messages never contain the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    /// Not of the form `svk_<16 hex digits>_<64 hex digits>`.
    #[error("the API key is malformed (expected svk_<id>_<secret>)")]
    Malformed,
    /// No key with that id exists.
    #[error("unknown API key {0}")]
    Unknown(String),
    /// The key was revoked.
    #[error("API key {0} was revoked")]
    Revoked(String),
    /// The key expired.
    #[error("API key {0} has expired")]
    Expired(String),
    /// The id exists but the secret is wrong.
    #[error("API key {0} has a wrong secret")]
    WrongSecret(String),
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When (unix microseconds).
    pub at: i64,
    /// Who (a principal id, or `unauthenticated`).
    pub principal: String,
    /// In which tenant.
    pub tenant: String,
    /// The RPC, as `Service/Method`.
    pub rpc: String,
    /// The ids it named (task, run, schedule, key, node).
    pub targets: Vec<String>,
    /// `ok`, or the status it was refused or failed with and why.
    pub outcome: String,
    /// The caller's address.
    pub peer: String,
}

/// A page of the audit log, newest first.
#[derive(Debug, Clone)]
pub struct AuditPage {
    /// The entries.
    pub entries: Vec<AuditEntry>,
    /// Where the next page starts, if there is one.
    pub next_page_token: Option<String>,
}

/// Which audit entries to list.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only entries at or after this time.
    pub since: Option<i64>,
    /// Only entries of this principal.
    pub principal: Option<String>,
    /// Only entries of this tenant.
    pub tenant: Option<String>,
    /// Most entries returned.
    pub page_size: usize,
    /// From a previous page.
    pub page_token: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Splits `svk_<id>_<secret>` into the id and the secret's bytes.
fn parse_key(token: &str) -> Result<(&str, Vec<u8>), KeyRefusal> {
    let rest = token
        .strip_prefix(KEY_PREFIX)
        .ok_or(KeyRefusal::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(KeyRefusal::Malformed)?;
    let id_ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let secret = unhex(secret).filter(|s| s.len() == 32);
    match (id_ok, secret) {
        (true, Some(secret)) => Ok((id, secret)),
        _ => Err(KeyRefusal::Malformed),
    }
}

/// The per-cluster hash key, made in the same transaction that first needs it.
async fn hash_key(txn: &mut supervisor_store::Transaction<'_>) -> Result<[u8; 32], EngineError> {
    let key = keyspace::auth_hash_key();
    if let Some(bytes) = txn.get(&key).await?
        && let Ok(k) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok(k);
    }
    let mut k = [0u8; 32];
    rand::rng().fill_bytes(&mut k);
    txn.set(&key, &k);
    Ok(k)
}

fn hash(key: &[u8; 32], secret: &[u8]) -> blake3::Hash {
    blake3::keyed_hash(key, secret)
}

async fn load_key(
    txn: &mut supervisor_store::Transaction<'_>,
    id: &str,
) -> Result<Option<KeyRecord>, EngineError> {
    match txn.get(&keyspace::api_key(id)).await? {
        Some(bytes) => Ok(Some(decode("API key", &bytes)?)),
        None => Ok(None),
    }
}

async fn tenant_exists(
    txn: &mut supervisor_store::Transaction<'_>,
    name: &str,
) -> Result<bool, EngineError> {
    Ok(name == DEFAULT_TENANT || txn.get(&keyspace::tenant(name)).await?.is_some())
}

impl Engine {
    /// Makes tenant `name`. Fails with `INVALID_ARGUMENT` for a bad name and
    /// `ALREADY_EXISTS` when it exists.
    pub async fn create_tenant(&self, name: &str, by: &str) -> Result<TenantInfo, EngineError> {
        validate_tenant(name)?;
        let info = TenantInfo {
            name: name.to_string(),
            created_at: self.now_micros(),
            created_by: by.to_string(),
        };
        let info = &info;
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    if tenant_exists(txn, &info.name).await? {
                        return Err(EngineError::AlreadyExists(format!(
                            "tenant {} already exists",
                            info.name
                        )));
                    }
                    txn.set(&keyspace::tenant(&info.name), &encode(info)?);
                    Ok(info.clone())
                })
            })
            .await
    }

    /// Every tenant, `default` first.
    pub async fn list_tenants(&self) -> Result<Vec<TenantInfo>, EngineError> {
        let (begin, end) = keyspace::tenant_range();
        let mut txn = self.inner.db.begin().await?;
        let rows = txn
            .get_range(&begin, &end, RangeOptions::new().snapshot())
            .await?;
        let mut tenants = vec![TenantInfo {
            name: DEFAULT_TENANT.into(),
            created_at: 0,
            created_by: "built in".into(),
        }];
        for kv in rows {
            tenants.push(decode("tenant", &kv.value)?);
        }
        Ok(tenants)
    }

    /// Makes an API key for `tenant` (which must exist) with `role`; the returned key is
    /// shown once and never stored.
    pub async fn create_key(
        &self,
        tenant: &str,
        role: Role,
        name: &str,
        expires_at: Option<i64>,
        by: &str,
    ) -> Result<NewKey, EngineError> {
        validate_tenant(tenant)?;
        if name.len() > MAX_KEY_NAME_BYTES || name.chars().any(char::is_control) {
            return Err(FieldError::new(
                "name",
                format!(
                    "a key name is at most {MAX_KEY_NAME_BYTES} bytes without control characters"
                ),
            )
            .into());
        }
        let now = self.now_micros();
        if expires_at.is_some_and(|e| e <= now) {
            return Err(FieldError::new("expires", "the expiry is in the past").into());
        }
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut id);
        rand::rng().fill_bytes(&mut secret);
        let id = hex(&id);
        let info = ApiKeyInfo {
            id: id.clone(),
            tenant: tenant.to_string(),
            role,
            name: name.to_string(),
            created_at: now,
            created_by: by.to_string(),
            expires_at,
            revoked_at: None,
            last_used_at: None,
        };
        let (info_ref, secret_ref) = (&info, &secret);
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    if !tenant_exists(txn, &info_ref.tenant).await? {
                        return Err(EngineError::FailedPrecondition(format!(
                            "no tenant {}; create it first (`supervisor tenant create {}`)",
                            info_ref.tenant, info_ref.tenant
                        )));
                    }
                    let k = hash_key(txn).await?;
                    let record = KeyRecord {
                        info: info_ref.clone(),
                        hash: hash(&k, secret_ref).as_bytes().to_vec(),
                    };
                    txn.set(&keyspace::api_key(&info_ref.id), &encode(&record)?);
                    Ok(())
                })
            })
            .await?;
        Ok(NewKey {
            key: format!("{KEY_PREFIX}{id}_{}", hex(&secret)),
            info,
        })
    }

    /// Every key, or those of one tenant, oldest first, with their last use.
    pub async fn list_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyInfo>, EngineError> {
        let (begin, end) = keyspace::api_key_range();
        let mut txn = self.inner.db.begin().await?;
        let rows = txn
            .get_range(&begin, &end, RangeOptions::new().snapshot())
            .await?;
        let mut keys = Vec::new();
        for kv in rows {
            let record: KeyRecord = decode("API key", &kv.value)?;
            if tenant.is_some_and(|t| t != record.info.tenant) {
                continue;
            }
            let mut info = record.info;
            info.last_used_at = txn
                .get_snapshot(&keyspace::api_key_use(&info.id))
                .await?
                .map(|b| crate::codec::counter(Some(&b)));
            keys.push(info);
        }
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }

    /// Revokes key `id` (of `tenant`, when given: another tenant's key is `NOT_FOUND`).
    /// Every node refuses it once its cache of the key lapses (a second at most).
    pub async fn revoke_key(
        &self,
        id: &str,
        tenant: Option<&str>,
    ) -> Result<ApiKeyInfo, EngineError> {
        let now = self.now_micros();
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    let missing = || EngineError::KeyNotFound { id: id.to_string() };
                    let mut record = load_key(txn, id).await?.ok_or_else(missing)?;
                    if tenant.is_some_and(|t| t != record.info.tenant) {
                        return Err(missing());
                    }
                    if record.info.revoked_at.is_none() {
                        record.info.revoked_at = Some(now);
                        txn.set(&keyspace::api_key(id), &encode(&record)?);
                    }
                    Ok(record.info)
                })
            })
            .await
    }

    /// Checks a presented API key: its form, that it exists, is neither revoked nor
    /// expired, and that its secret matches (in constant time).
    pub async fn verify_key(
        &self,
        token: &str,
    ) -> Result<Result<ApiKeyInfo, KeyRefusal>, EngineError> {
        let (id, secret) = match parse_key(token) {
            Ok(parts) => parts,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let now = self.now_micros();
        let mut txn = self.inner.db.begin().await?;
        let Some(record) = load_key(&mut txn, id).await? else {
            return Ok(Err(KeyRefusal::Unknown(id.to_string())));
        };
        let Some(bytes) = txn.get_snapshot(&keyspace::auth_hash_key()).await? else {
            return Ok(Err(KeyRefusal::Unknown(id.to_string())));
        };
        let Ok(k) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            return Err(EngineError::Corrupt(
                "the cluster's key hash key is not 32 bytes".into(),
            ));
        };
        let presented = hash(&k, &secret);
        let stored = <[u8; 32]>::try_from(record.hash.as_slice())
            .map(blake3::Hash::from_bytes)
            .map_err(|_| EngineError::Corrupt(format!("API key {id} has a damaged hash")))?;
        // Constant-time comparison (blake3::Hash's PartialEq).
        if presented != stored {
            return Ok(Err(KeyRefusal::WrongSecret(id.to_string())));
        }
        if record.info.revoked_at.is_some() {
            return Ok(Err(KeyRefusal::Revoked(id.to_string())));
        }
        if record.info.expires_at.is_some_and(|e| e <= now) {
            return Ok(Err(KeyRefusal::Expired(id.to_string())));
        }
        Ok(Ok(record.info))
    }

    /// Records that key `id` was used now (a blind write to its own key).
    pub async fn record_key_use(&self, id: &str) -> Result<(), EngineError> {
        let now = self.now_micros();
        self.inner
            .db
            .run(|txn| {
                Box::pin(async move {
                    txn.set(&keyspace::api_key_use(id), &now.to_le_bytes());
                    Ok::<_, EngineError>(())
                })
            })
            .await
    }

    /// Whether some admin key exists that is neither revoked nor expired.
    pub async fn has_admin_key(&self) -> Result<bool, EngineError> {
        let now = self.now_micros();
        Ok(self.list_keys(None).await?.iter().any(|k| {
            k.role == Role::Admin && k.revoked_at.is_none() && k.expires_at.is_none_or(|e| e > now)
        }))
    }

    /// Appends entries to the audit log (group-committed with other callers' entries).
    pub async fn audit(&self, entry: AuditEntry) -> Result<(), EngineError> {
        self.inner.audits.call(entry).await
    }

    /// A page of the audit log, newest first.
    pub async fn list_audit(&self, query: &AuditQuery) -> Result<AuditPage, EngineError> {
        let (begin, mut end) = keyspace::audit_range();
        if let Some(token) = &query.page_token {
            end = unhex(token)
                .filter(|k| *k > begin && *k < end)
                .ok_or_else(|| FieldError::new("page_token", "not a token from a previous page"))?;
        }
        let begin = match query.since {
            Some(since) => keyspace::audit_since(since),
            None => begin,
        };
        let page_size = query.page_size.clamp(1, 1000);
        let mut entries = Vec::new();
        let mut txn = self.inner.db.begin().await?;
        let mut cursor_end = end;
        let mut next_page = None;
        'scan: loop {
            let rows = txn
                .get_range(
                    &begin,
                    &cursor_end,
                    RangeOptions::new().snapshot().reverse().limit(512),
                )
                .await?;
            for kv in &rows {
                cursor_end = kv.key.clone();
                let entry: AuditEntry = decode("audit entry", &kv.value)?;
                let wanted = query
                    .principal
                    .as_ref()
                    .is_none_or(|p| *p == entry.principal)
                    && query.tenant.as_ref().is_none_or(|t| *t == entry.tenant);
                if wanted {
                    entries.push(entry);
                    if entries.len() == page_size {
                        next_page = Some(kv.key.clone());
                        break 'scan;
                    }
                }
            }
            if rows.len() < 512 {
                break;
            }
        }
        Ok(AuditPage {
            next_page_token: next_page.map(|k| hex(&k)),
            entries,
        })
    }
}

/// Writes a batch of audit entries in one transaction.
pub(crate) async fn write_audits(
    inner: &Inner,
    entries: Vec<AuditEntry>,
) -> Result<Vec<Result<(), EngineError>>, EngineError> {
    let keyed: Vec<(Vec<u8>, Vec<u8>)> = entries
        .iter()
        .map(|e| Ok((keyspace::audit(e.at, rand::rng().next_u64()), encode(e)?)))
        .collect::<Result<_, EngineError>>()?;
    let keyed = &keyed;
    inner
        .db
        .run(|txn| {
            Box::pin(async move {
                for (k, v) in keyed {
                    txn.set(k, v);
                }
                Ok::<_, EngineError>(())
            })
        })
        .await?;
    Ok(entries.iter().map(|_| Ok(())).collect())
}

/// The principal a verified key stands for.
pub fn principal_of(key: &ApiKeyInfo) -> Principal {
    Principal::new(
        key.tenant.clone(),
        key.role,
        format!("key:{}", key.id),
        key.name.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_only_in_their_exact_form() {
        let secret = "ab".repeat(32);
        let key = format!("svk_0123456789abcdef_{secret}");
        let (id, bytes) = parse_key(&key).unwrap();
        assert_eq!((id, bytes.len()), ("0123456789abcdef", 32));
        for bad in [
            String::new(),
            "svk_".into(),
            format!("sk_0123456789abcdef_{secret}"),
            format!("svk_0123456789abcde_{secret}"),
            format!("svk_0123456789abcdef_{}", &secret[1..]),
            format!("svk_0123456789abcdeg_{secret}"),
            "svk_0123456789abcdef".into(),
        ] {
            assert_eq!(parse_key(&bad), Err(KeyRefusal::Malformed), "{bad}");
        }
    }
}
