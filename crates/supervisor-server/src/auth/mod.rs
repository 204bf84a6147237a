//! Identity at the API's edge: one tower layer in front of every service turns the
//! bearer token of a call into a [`Principal`], checks the permission the RPC needs
//! ([`permissions`]), the principal's rate limit, records mutating and refused calls in
//! the audit log, and hands the principal to the handlers, which take the tenant from it
//! and never from the request.
//!
//! With `[auth] enabled = false` (the default) every call is the anonymous admin of the
//! `default` tenant, as before identity existed.

mod jwt;
mod layer;
pub mod permissions;
mod targets;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use supervisor_engine::{Engine, KEY_PREFIX, principal_of};
use supervisor_model::{Principal, Role};
use tonic::Status;

pub use jwt::{JwtConfig, JwtVerifier};
pub use layer::AuthLayer;
pub use targets::Targets;

/// `[auth]`: who may call the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Check credentials on every call. Default false: with the API on a loopback
    /// address that is the local quick start; a node listening elsewhere refuses to start
    /// without it unless `--insecure` is given.
    pub enabled: bool,
    /// Where the first start with auth on writes the admin key it makes (mode 0600).
    /// Default: `<data_dir>/admin.key`.
    pub admin_key_file: Option<PathBuf>,
    /// How long a node trusts a key it checked (a revoked key stops working everywhere
    /// within this). Default 1s.
    #[serde(with = "humantime_serde")]
    pub key_cache: Duration,
    /// JWT bearer tokens, when set.
    pub jwt: Option<JwtConfig>,
    /// Requests per minute per principal, by role, with per-key overrides.
    pub rate_limits: RateLimits,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            admin_key_file: None,
            key_cache: Duration::from_secs(1),
            jwt: None,
            rate_limits: RateLimits::default(),
        }
    }
}

impl AuthConfig {
    /// Checks the values, naming the first wrong one.
    pub fn validate(&self) -> Result<(), String> {
        if self.key_cache > Duration::from_secs(1) {
            return Err(format!(
                "auth.key_cache ({:?}) must be at most 1s: a revoked key must stop working within a second",
                self.key_cache
            ));
        }
        if let Some(jwt) = &self.jwt {
            jwt.validate()?;
        }
        Ok(())
    }
}

/// `[auth.rate_limits]`: requests per minute a principal may make (0: unlimited).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// For viewers. Default 0.
    pub viewer: u32,
    /// For developers. Default 0.
    pub developer: u32,
    /// For operators. Default 0.
    pub operator: u32,
    /// For admins. Default 0.
    pub admin: u32,
    /// By API key id, over the role's limit.
    pub keys: BTreeMap<String, u32>,
}

impl RateLimits {
    fn per_minute(&self, principal: &Principal) -> u32 {
        let key = principal.id.strip_prefix("key:");
        if let Some(limit) = key.and_then(|k| self.keys.get(k)) {
            return *limit;
        }
        match principal.role {
            Role::Viewer => self.viewer,
            Role::Developer => self.developer,
            Role::Operator => self.operator,
            Role::Admin => self.admin,
        }
    }
}

/// A token bucket per principal.
#[derive(Default)]
struct Buckets(Mutex<HashMap<String, (f64, Instant)>>);

impl Buckets {
    /// Takes one request from `who`'s bucket of `per_minute`; on refusal, how long until
    /// one is available.
    fn take(&self, who: &str, per_minute: u32) -> Result<(), Duration> {
        if per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(per_minute);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, at) = map.entry(who.to_string()).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * capacity / 60.0).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) * 60.0 / capacity))
        }
    }
}

/// Turns bearer tokens into principals: API keys through the store (cached for
/// `key_cache`), JWTs through the configured verifier.
pub struct Authenticator {
    engine: Engine,
    cfg: AuthConfig,
    jwt: Option<JwtVerifier>,
    /// Token hash → the verdict and when it was reached.
    cache: Mutex<HashMap<blake3::Hash, Verdict>>,
    /// Key id → when its use was last recorded by this node.
    used: Mutex<HashMap<String, Instant>>,
    buckets: Buckets,
}

/// A token's verdict (the principal, or why not) and when it was reached.
type Verdict = (Result<Principal, String>, Instant);

/// How often a node records a key's last use.
const USE_RECORDED_EVERY: Duration = Duration::from_secs(60);

impl Authenticator {
    /// An authenticator over `engine` under `cfg`.
    pub fn new(engine: Engine, cfg: AuthConfig) -> Result<Authenticator, String> {
        cfg.validate()?;
        let jwt = cfg.jwt.clone().map(JwtVerifier::new).transpose()?;
        Ok(Authenticator {
            engine,
            cfg,
            jwt,
            cache: Mutex::new(HashMap::new()),
            used: Mutex::new(HashMap::new()),
            buckets: Buckets::default(),
        })
    }

    /// Whether credentials are checked at all.
    pub fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    /// The principal `token` stands for, or `UNAUTHENTICATED` saying why.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, Status> {
        let fingerprint = blake3::hash(token.as_bytes());
        if let Some((verdict, at)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fingerprint)
            && at.elapsed() < self.cfg.key_cache
        {
            return verdict.clone().map_err(Status::unauthenticated);
        }
        let verdict = if token.starts_with(KEY_PREFIX) {
            match self.engine.verify_key(token).await {
                Ok(Ok(key)) => {
                    self.note_use(&key.id);
                    Ok(principal_of(&key))
                }
                Ok(Err(refusal)) => Err(refusal.to_string()),
                Err(err) => {
                    return Err(Status::unavailable(format!(
                        "could not check the API key ({err}); retry"
                    )));
                }
            }
        } else if token.split('.').count() == 3 {
            match &self.jwt {
                Some(v) => v.verify(token),
                None => {
                    Err("JWTs are not accepted by this node (no [auth.jwt]); use an API key".into())
                }
            }
        } else {
            Err("the token is neither an API key (svk_...) nor a JWT".into())
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 100_000 {
            cache.retain(|_, (_, at)| at.elapsed() < self.cfg.key_cache);
        }
        cache.insert(fingerprint, (verdict.clone(), Instant::now()));
        verdict.map_err(Status::unauthenticated)
    }

    /// Records, at most once a minute per key on this node, that a key was used.
    fn note_use(&self, id: &str) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used
            .get(id)
            .is_some_and(|at| at.elapsed() < USE_RECORDED_EVERY)
        {
            return;
        }
        used.insert(id.to_string(), Instant::now());
        let (engine, id) = (self.engine.clone(), id.to_string());
        tokio::spawn(async move {
            if let Err(err) = engine.record_key_use(&id).await {
                tracing::debug!(key = %id, error = %err, "could not record a key's use");
            }
        });
    }

    /// Takes one request from `principal`'s rate limit; on refusal, how long to wait.
    pub fn rate_limit(&self, principal: &Principal) -> Result<(), Duration> {
        let per_minute = self.cfg.rate_limits.per_minute(principal);
        self.buckets.take(&principal.id, per_minute)
    }

    /// The engine, for the audit log.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// The principal a handler serves: set by [`AuthLayer`] on every call.
pub fn principal_in(extensions: &http::Extensions) -> Principal {
    extensions
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(Principal::anonymous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_at_their_rate_and_zero_means_unlimited() {
        let b = Buckets::default();
        for _ in 0..3 {
            assert_eq!(b.take("k", 3), Ok(()));
        }
        let wait = b.take("k", 3).unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert_eq!(b.take("other", 3), Ok(()));
        for _ in 0..1000 {
            assert_eq!(b.take("free", 0), Ok(()));
        }
    }
}
