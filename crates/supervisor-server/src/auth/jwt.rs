//! JWT bearer tokens: HS256 signed with a shared secret (a file), or RS256/ES256 signed
//! by keys published in a JWKS file (matched by `kid`). Both files are read again when
//! they change. Issuer, audience, expiry and not-before are checked; two claims
//! (configurable names) give the tenant and the role.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use supervisor_model::{Principal, Role, validate_tenant};

/// `[auth.jwt]`: which JWTs a node accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// File holding the HS256 shared secret (trailing whitespace ignored).
    pub hs256_secret_file: Option<PathBuf>,
    /// JWKS file of the RS256/ES256 public keys (a JSON `{"keys": [...]}`).
    pub jwks_file: Option<PathBuf>,
    /// The `iss` every token must carry. Required.
    pub issuer: String,
    /// The `aud` every token must carry. Required.
    pub audience: String,
    /// The claim naming the tenant. Default `tenant`.
    pub tenant_claim: String,
    /// The claim naming the role (`viewer`, `developer`, `operator`, `admin`). Default
    /// `role`.
    pub role_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`. Default 30s.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            hs256_secret_file: None,
            jwks_file: None,
            issuer: String::new(),
            audience: String::new(),
            tenant_claim: "tenant".into(),
            role_claim: "role".into(),
            leeway: Duration::from_secs(30),
        }
    }
}

impl JwtConfig {
    /// Checks the values, naming the first wrong one.
    pub fn validate(&self) -> Result<(), String> {
        if self.hs256_secret_file.is_none() && self.jwks_file.is_none() {
            return Err("auth.jwt needs hs256_secret_file or jwks_file".into());
        }
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err("auth.jwt.issuer and auth.jwt.audience must be set".into());
        }
        Ok(())
    }
}

/// A file read again when its modification time changes (checked at most once a second).
struct Watched<T> {
    path: PathBuf,
    parse: fn(&Path, &[u8]) -> Result<T, String>,
    state: Mutex<Option<(SystemTime, Instant, T)>>,
}

impl<T: Clone> Watched<T> {
    fn new(path: PathBuf, parse: fn(&Path, &[u8]) -> Result<T, String>) -> Self {
        Watched {
            path,
            parse,
            state: Mutex::new(None),
        }
    }

    fn get(&self) -> Result<T, String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, checked, value)) = state.as_ref()
            && checked.elapsed() < Duration::from_secs(1)
        {
            return Ok(value.clone());
        }
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        if let Some((seen, checked, value)) = state.as_mut()
            && *seen == modified
        {
            *checked = Instant::now();
            return Ok(value.clone());
        }
        let bytes = std::fs::read(&self.path)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        let value = (self.parse)(&self.path, &bytes)?;
        *state = Some((modified, Instant::now(), value.clone()));
        Ok(value)
    }
}

fn parse_secret(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let text = String::from_utf8_lossy(bytes);
    let secret = text.trim_end();
    if secret.len() < 32 {
        return Err(format!(
            "the HS256 secret in {} is shorter than 32 bytes",
            path.display()
        ));
    }
    Ok(secret.as_bytes().to_vec())
}

fn parse_jwks(path: &Path, bytes: &[u8]) -> Result<JwkSet, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("{} is not a JWKS: {e}", path.display()))
}

/// Checks JWTs under one `[auth.jwt]`.
pub struct JwtVerifier {
    cfg: JwtConfig,
    secret: Option<Watched<Vec<u8>>>,
    jwks: Option<Watched<JwkSet>>,
}

impl JwtVerifier {
    /// A verifier; its files are read on first use (and a missing one is an error
    /// then, for that token, not a failure to start).
    pub fn new(cfg: JwtConfig) -> Result<JwtVerifier, String> {
        cfg.validate()?;
        Ok(JwtVerifier {
            secret: cfg
                .hs256_secret_file
                .clone()
                .map(|p| Watched::new(p, parse_secret)),
            jwks: cfg.jwks_file.clone().map(|p| Watched::new(p, parse_jwks)),
            cfg,
        })
    }

    /// The principal a token stands for, or why it does not stand for one (never
    /// quoting the token).
    pub fn verify(&self, token: &str) -> Result<Principal, String> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| format!("the token is not a JWT ({e})"))?;
        let key = match header.alg {
            Algorithm::HS256 => {
                let secret = self
                    .secret
                    .as_ref()
                    .ok_or("HS256 tokens are not accepted (no auth.jwt.hs256_secret_file)")?
                    .get()?;
                DecodingKey::from_secret(&secret)
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                let jwks = self
                    .jwks
                    .as_ref()
                    .ok_or("RS256/ES256 tokens are not accepted (no auth.jwt.jwks_file)")?
                    .get()?;
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or("the token names no key (kid)")?;
                let jwk = jwks
                    .find(kid)
                    .ok_or_else(|| format!("no key {kid:?} in the JWKS"))?;
                DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid:?} is unusable: {e}"))?
            }
            other => return Err(format!("tokens signed with {other:?} are not accepted")),
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.cfg.issuer]);
        validation.set_audience(&[&self.cfg.audience]);
        validation.validate_nbf = true;
        validation.leeway = self.cfg.leeway.as_secs();
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &validation,
        )
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                "the token has expired".to_string()
            }
            jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                "the token is not valid yet (nbf)".to_string()
            }
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                "the token's signature is wrong".to_string()
            }
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => {
                "the token's issuer is not accepted".into()
            }
            jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                "the token's audience is not accepted".into()
            }
            other => format!("the token is not valid ({other:?})"),
        })?;
        let claims = data.claims;
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let tenant = text(&self.cfg.tenant_claim)
            .ok_or_else(|| format!("the token has no {:?} claim", self.cfg.tenant_claim))?;
        validate_tenant(&tenant).map_err(|e| e.message)?;
        let role: Role = text(&self.cfg.role_claim)
            .ok_or_else(|| format!("the token has no {:?} claim", self.cfg.role_claim))?
            .parse()
            .map_err(|e: supervisor_model::FieldError| e.message)?;
        let subject = text("sub").unwrap_or_default();
        Ok(Principal::new(
            tenant,
            role,
            format!("jwt:{}/{subject}", self.cfg.issuer),
            subject,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn verifier(dir: &Path) -> JwtVerifier {
        let file = dir.join("secret");
        std::fs::write(&file, format!("{SECRET}\n")).unwrap();
        JwtVerifier::new(JwtConfig {
            hs256_secret_file: Some(file),
            issuer: "https://idp.example".into(),
            audience: "supervisor".into(),
            ..JwtConfig::default()
        })
        .unwrap()
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn claims_map_to_a_principal_and_every_check_names_what_failed() {
        let dir = tempfile::tempdir().unwrap();
        let v = verifier(dir.path());
        let good = serde_json::json!({
            "iss": "https://idp.example", "aud": "supervisor", "sub": "ana",
            "exp": now() + 600, "nbf": now() - 10, "tenant": "team-a", "role": "developer",
        });
        let p = v.verify(&token(good.clone(), SECRET)).unwrap();
        assert_eq!(
            (p.tenant.as_str(), p.role, p.id.as_str()),
            ("team-a", Role::Developer, "jwt:https://idp.example/ana")
        );

        let with = |k: &str, val: serde_json::Value| {
            let mut c = good.clone();
            c[k] = val;
            token(c, SECRET)
        };
        let cases = [
            (with("exp", (now() - 3600).into()), "expired"),
            (with("nbf", (now() + 3600).into()), "not valid yet"),
            (with("iss", "https://evil.example".into()), "issuer"),
            (with("aud", "other".into()), "audience"),
            (with("role", "root".into()), "unknown role"),
            (
                token(good.clone(), "another-secret-of-enough-length-xx"),
                "signature",
            ),
            ("not.a.jwt".to_string(), "not a JWT"),
        ];
        for (t, want) in cases {
            let err = v.verify(&t).unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
            assert!(!err.contains(&t), "the error quotes the token");
        }
    }

    fn base64url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn es256_tokens_are_checked_against_the_jwks_which_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let jwks = dir.path().join("jwks.json");
        let write_jwks = |kid: &str, key: &rcgen::KeyPair| {
            let point = key.public_key_raw();
            let (x, y) = point[1..].split_at(32);
            let set = serde_json::json!({"keys": [{
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": base64url(x), "y": base64url(y),
            }]});
            std::fs::write(&jwks, set.to_string()).unwrap();
        };
        let sign = |kid: &str, key: &rcgen::KeyPair| {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(kid.into());
            let claims = serde_json::json!({
                "iss": "idp", "aud": "sv", "sub": "bot", "exp": now() + 600,
                "tenant": "team-a", "role": "viewer",
            });
            let encoding = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
            jsonwebtoken::encode(&header, &claims, &encoding).unwrap()
        };
        let first = rcgen::KeyPair::generate().unwrap();
        write_jwks("k1", &first);
        let v = JwtVerifier::new(JwtConfig {
            jwks_file: Some(jwks.clone()),
            issuer: "idp".into(),
            audience: "sv".into(),
            ..JwtConfig::default()
        })
        .unwrap();
        assert_eq!(v.verify(&sign("k1", &first)).unwrap().role, Role::Viewer);
        let second = rcgen::KeyPair::generate().unwrap();
        let err = v.verify(&sign("k2", &second)).unwrap_err();
        assert!(err.contains("no key \"k2\""), "{err}");
        // A key rotation: the file changes, and the next check after a second sees it.
        std::thread::sleep(Duration::from_millis(1100));
        write_jwks("k2", &second);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(v.verify(&sign("k2", &second)).unwrap().tenant, "team-a");
        // HS256 is refused when only a JWKS is configured.
        let hs = token(
            serde_json::json!({"iss": "idp", "aud": "sv", "exp": now() + 60}),
            SECRET,
        );
        assert!(v.verify(&hs).unwrap_err().contains("HS256"));
    }
}
