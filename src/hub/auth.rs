//! Who a connecting browser is: the handshake's `auth` payload turned into an identity,
//! by a verified JWT or, in dev mode, by the user id the client states.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, AuthMode, Secret, SettingError};

use jsonwebtoken::AlgorithmFamily as KeyFamily;

use crate::names::MAX_USER_ID_LEN;
/// Longest token accepted, in bytes: a cheap refusal before any parsing.
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Most rooms a token's `rooms` claim may list.
pub const MAX_CLAIM_ROOMS: usize = 64;

/// The authenticated side of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// None for an anonymous dev-mode connection.
    pub user_id: Option<String>,
    /// Rooms granted by the token's `rooms` claim.
    pub rooms: Vec<String>,
    /// When the credential stops being valid (the token's `exp`); None when it never does.
    pub expires_at: Option<std::time::SystemTime>,
    /// What a deciding backend attached to the socket (JSON; empty for none).
    pub data_json: String,
}

/// Why a connection was refused. The message is what the browser's `connect_error` shows;
/// it never repeats the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("authentication required: pass the JWT as auth.token")]
    MissingToken,
    #[error("token is malformed")]
    Malformed,
    #[error("token algorithm {0:?} is not allowed")]
    AlgorithmNotAllowed(String),
    #[error("token signature is invalid")]
    InvalidSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer is not accepted")]
    WrongIssuer,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token lacks the required claim {0:?}")]
    MissingClaim(String),
    #[error("user id must be 1 to {MAX_USER_ID_LEN} characters of printable text")]
    InvalidUserId,
    #[error("a backend decides connects here")]
    BackendDecides,
    #[error("rooms claim is invalid: {0}")]
    InvalidRooms(String),
    #[error("token header marks extensions as critical (\"crit\"); none is supported")]
    CriticalExtension,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    rooms: Vec<String>,
    /// Required (jsonwebtoken checks it, and names it when missing); kept to end the
    /// socket when it passes.
    #[serde(default)]
    exp: Option<u64>,
}

/// A JWT check: the key, what is validated, and the algorithms allowed.
struct JwtCheck {
    key: DecodingKey,
    validation: Box<Validation>,
    allowed: Vec<Algorithm>,
}

enum Mode {
    Dev,
    Jwt(JwtCheck),
    /// A backend decides each connect; with a check, a valid token is required first and
    /// its claims go to the backend with the question.
    Backend(Option<JwtCheck>),
}

/// What the handshake alone says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Known now (dev or JWT mode).
    Known(Identity),
    /// A backend decides (backend mode), with the verified token's claims as JSON when a
    /// token is required.
    AskBackend { jwt_claims_json: Option<String> },
}

/// Checks handshakes. Built once from config.
pub struct Authenticator {
    mode: Mode,
}

impl Authenticator {
    pub fn from_config(config: &AuthConfig) -> Result<Self, SettingError> {
        let mode = match config.mode {
            AuthMode::Dev => Mode::Dev,
            AuthMode::Jwt => Mode::Jwt(JwtCheck::from_config(&config.jwt)?),
            AuthMode::Backend if config.backend.require_jwt => Mode::Backend(Some(JwtCheck::from_config(&config.jwt)?)),
            AuthMode::Backend => Mode::Backend(None),
        };
        Ok(Self { mode })
    }
}

impl JwtCheck {
    fn from_config(jwt: &crate::config::JwtConfig) -> Result<Self, SettingError> {
        let allowed: Vec<Algorithm> = jwt
            .algorithms
            .iter()
            .map(|a| a.parse().map_err(|_| SettingError::new("auth.jwt.algorithms", format!("{a:?} unknown"))))
            .collect::<Result<_, _>>()?;
        let first = *allowed.first().ok_or_else(|| SettingError::new("auth.jwt.algorithms", "empty"))?;
        let key = match first.family() {
            KeyFamily::Hmac => {
                let secret = jwt.secret.as_ref().ok_or_else(|| SettingError::new("auth.jwt.secret", "required"))?;
                DecodingKey::from_secret(secret.expose().as_bytes())
            }
            family => {
                let pem = match (&jwt.public_key_pem, &jwt.public_key_file) {
                    (Some(pem), _) => pem.clone(),
                    (None, Some(path)) => {
                        std::fs::read_to_string(path).map_err(|e| SettingError::new("auth.jwt.public_key_file", e))?
                    }
                    (None, None) => return Err(SettingError::new("auth.jwt.public_key_pem", "required")),
                };
                let key = match family {
                    KeyFamily::Rsa => DecodingKey::from_rsa_pem(pem.as_bytes()),
                    KeyFamily::Ec => DecodingKey::from_ec_pem(pem.as_bytes()),
                    _ => DecodingKey::from_ed_pem(pem.as_bytes()),
                };
                key.map_err(|e| SettingError::new("auth.jwt.public_key_pem", e))?
            }
        };
        let mut validation = Validation::new(first);
        validation.algorithms = allowed.clone();
        validation.leeway = jwt.leeway_seconds;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &jwt.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &jwt.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(JwtCheck { key, validation: Box::new(validation), allowed })
    }

    /// Checks a token and returns its claims.
    fn verify(&self, auth: &serde_json::Value) -> Result<(Claims, serde_json::Value), AuthError> {
        let token = match auth.get("token") {
            Some(serde_json::Value::String(t)) if !t.is_empty() => t,
            _ => return Err(AuthError::MissingToken),
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        check_algorithm(token, &self.allowed)?;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation)
            .map_err(|e| map_jwt_error(e.into_kind()))?;
        let claims: Claims = serde_json::from_value(data.claims.clone()).map_err(|_| AuthError::Malformed)?;
        Ok((claims, data.claims))
    }
}

impl Authenticator {
    pub fn is_dev(&self) -> bool {
        matches!(self.mode, Mode::Dev)
    }

    /// Turns a handshake `auth` payload into an identity.
    pub fn authenticate(&self, auth: &serde_json::Value) -> Result<Identity, AuthError> {
        match self.admit(auth)? {
            Admission::Known(identity) => Ok(identity),
            Admission::AskBackend { .. } => Err(AuthError::BackendDecides),
        }
    }

    /// What the handshake's `auth` payload says: an identity, or that a backend decides.
    pub fn admit(&self, auth: &serde_json::Value) -> Result<Admission, AuthError> {
        match &self.mode {
            Mode::Dev => {
                let user_id = match auth.get("userId") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(id)) => Some(valid_user_id(id)?),
                    Some(_) => return Err(AuthError::InvalidUserId),
                };
                Ok(Admission::Known(Identity {
                    user_id,
                    rooms: Vec::new(),
                    expires_at: None,
                    data_json: String::new(),
                }))
            }
            Mode::Jwt(check) => {
                let (claims, _) = check.verify(auth)?;
                let rooms = claims.rooms;
                if rooms.len() > MAX_CLAIM_ROOMS {
                    return Err(AuthError::InvalidRooms(format!("more than {MAX_CLAIM_ROOMS} rooms")));
                }
                for room in &rooms {
                    super::validate_room(room).map_err(|e| AuthError::InvalidRooms(e.to_string()))?;
                }
                let expires_at = claims.exp.map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
                let user_id = Some(valid_user_id(&claims.sub)?);
                Ok(Admission::Known(Identity { user_id, rooms, expires_at, data_json: String::new() }))
            }
            Mode::Backend(None) => Ok(Admission::AskBackend { jwt_claims_json: None }),
            Mode::Backend(Some(check)) => {
                let (_, claims) = check.verify(auth)?;
                Ok(Admission::AskBackend { jwt_claims_json: Some(claims.to_string()) })
            }
        }
    }
}

/// Reads the header before anything else, so `none`, algorithms outside the configured
/// family and critical extensions get a precise refusal instead of a generic parse error.
fn check_algorithm(token: &str, allowed: &[Algorithm]) -> Result<(), AuthError> {
    let header = token.split('.').next().ok_or(AuthError::Malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed)?;
    let header: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    // RFC 7515 §4.1.11: a token whose `crit` names an extension the recipient does not
    // understand must be refused; the bridge understands none.
    if header.get("crit").is_some() {
        return Err(AuthError::CriticalExtension);
    }
    let alg = header.get("alg").and_then(|a| a.as_str()).ok_or(AuthError::Malformed)?;
    match alg.parse::<Algorithm>() {
        Ok(a) if allowed.contains(&a) => Ok(()),
        _ => Err(AuthError::AlgorithmNotAllowed(alg.chars().take(16).collect())),
    }
}

fn map_jwt_error(kind: ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::InvalidSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c),
        ErrorKind::InvalidAlgorithm => AuthError::AlgorithmNotAllowed("?".into()),
        _ => AuthError::Malformed,
    }
}

fn valid_user_id(id: &str) -> Result<String, AuthError> {
    if crate::names::check_user_id(id).is_err() {
        return Err(AuthError::InvalidUserId);
    }
    Ok(id.to_owned())
}

/// The backend's credentials: `authorization: Bearer <key>`, the same keys for gRPC and REST.
/// With no keys configured (dev mode only; config refuses it otherwise) every call passes.
#[derive(Clone)]
pub struct ApiKeys(Arc<Vec<Secret>>);

impl ApiKeys {
    pub fn new(keys: &[Secret]) -> Self {
        Self(Arc::new(keys.to_vec()))
    }

    pub fn is_open(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `header` (the whole `authorization` value) carries a configured key.
    pub fn accepts(&self, header: Option<&str>) -> bool {
        if self.is_open() {
            return true;
        }
        let Some(presented) = header.and_then(|h| h.strip_prefix("Bearer ")) else { return false };
        // No early exit: every key is compared, so timing does not tell which one matched.
        self.0.iter().fold(false, |found, key| found | bool::from(key.expose().as_bytes().ct_eq(presented.as_bytes())))
    }
}

/// The operator's credentials for the dashboard and the logs API (HTTP Basic). With no
/// password configured nothing is accepted.
#[derive(Clone)]
pub struct AdminCredentials {
    username: String,
    password: Option<Secret>,
}

impl AdminCredentials {
    pub fn new(username: &str, password: Option<&Secret>) -> Self {
        Self { username: username.to_owned(), password: password.cloned() }
    }

    pub fn is_configured(&self) -> bool {
        self.password.is_some()
    }

    /// True when `header` (the whole `authorization` value) is `Basic` with these
    /// credentials. Both parts are compared in constant time.
    pub fn accepts(&self, header: Option<&str>) -> bool {
        let Some(password) = &self.password else { return false };
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else { return false };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
        let Some(colon) = decoded.iter().position(|b| *b == b':') else { return false };
        let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
        let user_ok = user.ct_eq(self.username.as_bytes());
        let pass_ok = pass.ct_eq(password.expose().as_bytes());
        bool::from(user_ok & pass_ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{JwtConfig, Secret};
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn jwt_auth() -> Authenticator {
        Authenticator::from_config(&AuthConfig {
            mode: AuthMode::Jwt,
            jwt: JwtConfig { secret: Some(Secret::new(SECRET)), ..JwtConfig::default() },
            ..AuthConfig::default()
        })
        .unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    #[test]
    fn valid_token_gives_user_and_rooms() {
        let t = token(json!({"sub": "alice", "exp": now() + 60, "rooms": ["team:1"]}), SECRET);
        let id = jwt_auth().authenticate(&json!({"token": t})).unwrap();
        assert_eq!((id.user_id.as_deref(), id.rooms), (Some("alice"), vec!["team:1".to_owned()]));
        assert!(id.expires_at.is_some_and(|t| t > std::time::SystemTime::now()), "the token's exp is kept");
    }

    #[test]
    fn bad_tokens_are_refused_precisely() {
        let a = jwt_auth();
        let expired = token(json!({"sub": "a", "exp": now() - 120}), SECRET);
        assert_eq!(a.authenticate(&json!({"token": expired})), Err(AuthError::Expired));
        let forged = token(json!({"sub": "a", "exp": now() + 60}), "another-secret-another-secret-xx");
        assert_eq!(a.authenticate(&json!({"token": forged})), Err(AuthError::InvalidSignature));
        let none = format!(
            "{}.{}.",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sub":"a","exp":9999999999}"#)
        );
        assert_eq!(a.authenticate(&json!({"token": none})), Err(AuthError::AlgorithmNotAllowed("none".into())));
        assert_eq!(a.authenticate(&json!({})), Err(AuthError::MissingToken));
        assert_eq!(a.authenticate(&json!({"token": "abc"})), Err(AuthError::Malformed));
        let no_exp = token(json!({"sub": "a"}), SECRET);
        assert_eq!(a.authenticate(&json!({"token": no_exp})), Err(AuthError::MissingClaim("exp".into())));
        let crit = Header { crit: Some(vec!["exp".into()]), ..Header::default() };
        let critical =
            encode(&crit, &json!({"sub": "a", "exp": now() + 60}), &EncodingKey::from_secret(SECRET.as_bytes()))
                .unwrap();
        assert_eq!(a.authenticate(&json!({"token": critical})), Err(AuthError::CriticalExtension));
        let internal = token(json!({"sub": "a", "exp": now() + 60, "rooms": ["user:b"]}), SECRET);
        assert!(matches!(a.authenticate(&json!({"token": internal})), Err(AuthError::InvalidRooms(_))));
    }

    #[test]
    fn api_keys_need_the_bearer_scheme_and_an_exact_match() {
        let keys = ApiKeys::new(&[Secret::new("key-one-0123456789"), Secret::new("key-two-0123456789")]);
        assert!(keys.accepts(Some("Bearer key-two-0123456789")));
        assert!(!keys.accepts(Some("key-two-0123456789")));
        assert!(!keys.accepts(Some("Bearer key-two-012345678")));
        assert!(!keys.accepts(None));
        assert!(ApiKeys::new(&[]).accepts(None));
    }

    #[test]
    fn admin_credentials_are_basic_and_exact() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let admin = AdminCredentials::new("admin", Some(&Secret::new("s3cret-pass")));
        assert!(admin.accepts(Some(&format!("Basic {}", b64("admin:s3cret-pass")))));
        assert!(!admin.accepts(Some(&format!("Basic {}", b64("admin:s3cret-pas")))));
        assert!(!admin.accepts(Some(&format!("Basic {}", b64("root:s3cret-pass")))));
        assert!(!admin.accepts(Some("Bearer s3cret-pass")));
        assert!(!admin.accepts(None));
        assert!(!AdminCredentials::new("admin", None).accepts(Some(&format!("Basic {}", b64("admin:")))));
    }

    #[test]
    fn dev_mode_takes_the_stated_user_or_none() {
        let a = Authenticator::from_config(&AuthConfig::default()).unwrap();
        assert_eq!(a.authenticate(&json!({"userId": "bob"})).unwrap().user_id.as_deref(), Some("bob"));
        assert_eq!(a.authenticate(&json!({})).unwrap().user_id, None);
        assert_eq!(a.authenticate(&json!({"userId": 5})), Err(AuthError::InvalidUserId));
    }
}
