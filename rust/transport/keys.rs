//! Who may connect: the server's API key, and the ephemeral client keys (`ek_...`) minted with it.
//!
//! A browser must not hold the server's key, so a backend (or the page at
//! `GET /`, after asking its user for the key once) mints a short-lived
//! client key with `POST /v1/realtime/client_secrets`, as `OpenAI`'s endpoint
//! does. The key opens sessions, over the WebSocket or `POST
//! /v1/realtime/calls`, until it expires, each with the session config it
//! was minted with; it cannot mint another. Keys live in this process only:
//! a restarted server knows none of them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// The prefix of every ephemeral key.
pub const EPHEMERAL_PREFIX: &str = "ek_";
/// How long a key lives unless the request says (`OpenAI`'s default).
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// The shortest and longest lives a request may ask for (`OpenAI`'s bounds).
pub const TTL_RANGE: (u64, u64) = (10, 7200);
/// Keys held at once (expired ones are forgotten first); one more is refused.
pub const MAX_KEYS: usize = 10_000;
/// How long an expired key is remembered, so that its user is told it
/// expired rather than that it is unknown.
const REMEMBER_EXPIRED: Duration = Duration::from_secs(3600);

/// Why a request may not proceed; answered with `401` (or `429` for
/// [`AuthError::TooManyKeys`]) and `OpenAI`'s error body.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// No key, or not the server's: send `Authorization: Bearer KEY` (or the
    /// subprotocol `openai-insecure-api-key.KEY`) with the server's key or a
    /// live ephemeral key.
    #[error(
        "Missing or incorrect API key: send 'Authorization: Bearer KEY' or the subprotocol 'openai-insecure-api-key.KEY', with the server's key or an ephemeral key from POST /v1/realtime/client_secrets."
    )]
    BadKey,
    /// An `ek_...` key this server never issued (or issued before a restart).
    #[error(
        "Unknown ephemeral key: this server did not issue it (keys do not survive a restart). Mint one with POST /v1/realtime/client_secrets."
    )]
    UnknownEphemeral,
    /// The ephemeral key's life is over: mint a new one.
    #[error(
        "The ephemeral key expired {ago} s ago (at {expires_at}, Unix time); mint a new one with POST /v1/realtime/client_secrets."
    )]
    Expired {
        /// When it expired, seconds since the Unix epoch.
        expires_at: u64,
        /// Seconds since then.
        ago: u64,
    },
    /// Minting needs the server's own key, not an ephemeral one.
    #[error(
        "An ephemeral key cannot mint another: call POST /v1/realtime/client_secrets with the server's API key."
    )]
    EphemeralCannotMint,
    /// [`MAX_KEYS`] unexpired keys exist: wait for some to expire.
    #[error(
        "Too many live ephemeral keys ({0}): mint fewer, or shorter-lived ones (expires_after.seconds)."
    )]
    TooManyKeys(usize),
    /// The OS had no randomness for a key (a server fault); try again.
    #[error("Could not mint a key: the OS gave no randomness ({0}).")]
    NoRandomness(String),
}

impl AuthError {
    /// A stable code for the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadKey | Self::UnknownEphemeral | Self::EphemeralCannotMint => "invalid_api_key",
            Self::Expired { .. } => "ephemeral_key_expired",
            Self::TooManyKeys(_) => "rate_limit_exceeded",
            Self::NoRandomness(_) => "server_error",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooManyKeys(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::NoRandomness(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let kind = match self {
            Self::NoRandomness(_) => "server_error",
            _ => "invalid_request_error",
        };
        let body = json!({"error": {
            "type": kind,
            "code": self.code(),
            "message": self.to_string(),
            "param": null,
        }});
        (self.status(), axum::Json(body)).into_response()
    }
}

/// What a request that passed may do.
#[derive(Debug, Clone, PartialEq)]
pub enum Grant {
    /// No auth is configured, or the server's key was presented.
    Full,
    /// A live ephemeral key, with the session config it was minted with.
    Ephemeral {
        /// The session config (a GA `session` object) its sessions start with.
        session: Option<Value>,
    },
}

impl Grant {
    /// The session config a session opened with this grant starts with.
    pub fn session(&self) -> Option<&Value> {
        match self {
            Self::Full => None,
            Self::Ephemeral { session } => session.as_ref(),
        }
    }
}

/// A minted key.
#[derive(Debug, Clone, PartialEq)]
pub struct Minted {
    /// `ek_...`.
    pub value: String,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

struct Secret {
    expires_at: SystemTime,
    session: Option<Value>,
}

/// The server's key and its ephemeral keys. Shared by every route.
pub struct Keys {
    api_key: Option<String>,
    secrets: Mutex<HashMap<String, Secret>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("auth", &self.api_key.is_some())
            .field("ephemeral", &self.lock().len())
            .finish_non_exhaustive()
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Keys {
    /// Keys for a server whose own key is `api_key` (`None`: no auth).
    pub fn new(api_key: Option<String>) -> Self {
        Self {
            api_key,
            secrets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether clients must present a key.
    pub fn required(&self) -> bool {
        self.api_key.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Secret>> {
        self.secrets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// May this request open a session? An `ek_...` key is always checked
    /// (even without auth, so that its session config applies and an
    /// expired one is refused); otherwise the server's key, when it has one.
    pub fn check(&self, headers: &HeaderMap) -> Result<Grant, AuthError> {
        self.check_at(headers, SystemTime::now())
    }

    fn check_at(&self, headers: &HeaderMap, now: SystemTime) -> Result<Grant, AuthError> {
        let tokens = presented(headers);
        if let Some(ek) = tokens.iter().find(|t| t.starts_with(EPHEMERAL_PREFIX)) {
            let secrets = self.lock();
            let secret = secrets.get(*ek).ok_or(AuthError::UnknownEphemeral)?;
            if now >= secret.expires_at {
                let expires_at = unix(secret.expires_at);
                return Err(AuthError::Expired {
                    expires_at,
                    ago: unix(now).saturating_sub(expires_at),
                });
            }
            return Ok(Grant::Ephemeral {
                session: secret.session.clone(),
            });
        }
        match &self.api_key {
            None => Ok(Grant::Full),
            Some(key) if tokens.iter().any(|t| same(t, key)) => Ok(Grant::Full),
            Some(_) => Err(AuthError::BadKey),
        }
    }

    /// May this request mint keys? Only with the server's key (or with no
    /// auth at all); never with an ephemeral key.
    pub fn check_minter(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let tokens = presented(headers);
        if tokens.iter().any(|t| t.starts_with(EPHEMERAL_PREFIX)) {
            return Err(AuthError::EphemeralCannotMint);
        }
        match &self.api_key {
            Some(key) if !tokens.iter().any(|t| same(t, key)) => Err(AuthError::BadKey),
            _ => Ok(()),
        }
    }

    /// A new key living `ttl`, whose sessions start with `session`.
    pub fn mint(&self, ttl: Duration, session: Option<Value>) -> Result<Minted, AuthError> {
        self.mint_at(ttl, session, SystemTime::now())
    }

    fn mint_at(
        &self,
        ttl: Duration,
        session: Option<Value>,
        now: SystemTime,
    ) -> Result<Minted, AuthError> {
        let value = random_key()?;
        let expires_at = now + ttl;
        let mut secrets = self.lock();
        if secrets.len() >= MAX_KEYS {
            secrets.retain(|_, s| now < s.expires_at + REMEMBER_EXPIRED);
        }
        if secrets.len() >= MAX_KEYS {
            secrets.retain(|_, s| now < s.expires_at);
        }
        if secrets.len() >= MAX_KEYS {
            return Err(AuthError::TooManyKeys(secrets.len()));
        }
        secrets.insert(
            value.clone(),
            Secret {
                expires_at,
                session,
            },
        );
        Ok(Minted {
            value,
            expires_at: unix(expires_at),
        })
    }
}

fn same(given: &str, key: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(key.as_bytes()))
}

/// `ek_` and 192 random bits in hex: unguessable, and safe in a subprotocol.
fn random_key() -> Result<String, AuthError> {
    let mut bytes = [0u8; 24];
    // Without OS randomness no key can be safe: refuse to mint.
    getrandom::fill(&mut bytes).map_err(|e| AuthError::NoRandomness(e.to_string()))?;
    let mut key = String::with_capacity(EPHEMERAL_PREFIX.len() + 2 * bytes.len());
    key.push_str(EPHEMERAL_PREFIX);
    for b in bytes {
        let _ = write!(key, "{b:02x}");
    }
    Ok(key)
}

/// The keys a request presents: bearer tokens and the browser subprotocol's.
fn presented(headers: &HeaderMap) -> Vec<&str> {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let subprotocol = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().strip_prefix("openai-insecure-api-key."));
    bearer.chain(subprotocol).collect()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn bearer(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
        h
    }

    #[test]
    fn the_server_key_by_header_or_subprotocol() {
        let keys = Keys::new(Some("sk-server".into()));
        assert_eq!(keys.check(&bearer("sk-server")), Ok(Grant::Full));
        assert_eq!(keys.check(&bearer("nope")), Err(AuthError::BadKey));
        assert_eq!(keys.check(&HeaderMap::new()), Err(AuthError::BadKey));
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("realtime, openai-insecure-api-key.sk-server"),
        );
        assert_eq!(keys.check(&h), Ok(Grant::Full));
        assert!(keys.check_minter(&bearer("sk-server")).is_ok());
        assert_eq!(
            keys.check_minter(&bearer("x")).unwrap_err(),
            AuthError::BadKey
        );
    }

    #[test]
    fn an_ephemeral_key_carries_its_session_until_it_expires() {
        let keys = Keys::new(Some("sk-server".into()));
        let t0 = SystemTime::now();
        let session = json!({"type": "realtime", "instructions": "Be brief."});
        let ek = keys
            .mint_at(Duration::from_secs(60), Some(session.clone()), t0)
            .unwrap();
        assert!(ek.value.starts_with("ek_") && ek.value.len() == 3 + 48);
        assert_eq!(ek.expires_at, unix(t0) + 60);
        let grant = keys.check_at(&bearer(&ek.value), t0).unwrap();
        assert_eq!(grant.session(), Some(&session));
        // Still good a second before its end, refused from its end on.
        let late = t0 + Duration::from_secs(59);
        assert!(keys.check_at(&bearer(&ek.value), late).is_ok());
        let after = t0 + Duration::from_secs(75);
        let e = keys.check_at(&bearer(&ek.value), after).unwrap_err();
        assert!(matches!(e, AuthError::Expired { ago: 15, .. }), "{e:?}");
        assert_eq!(e.code(), "ephemeral_key_expired");
        assert!(e.to_string().contains("expired 15 s ago"));
        // It cannot mint, and a forged one is unknown, even without auth.
        assert_eq!(
            keys.check_minter(&bearer(&ek.value)).unwrap_err(),
            AuthError::EphemeralCannotMint
        );
        let open = Keys::new(None);
        assert_eq!(open.check(&HeaderMap::new()), Ok(Grant::Full));
        assert_eq!(
            open.check(&bearer("ek_forged")).unwrap_err(),
            AuthError::UnknownEphemeral
        );
        assert_eq!(
            open.check(&bearer("ek_forged")).unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn keys_are_bounded_and_expired_ones_make_room() {
        let keys = Keys::new(None);
        let t0 = SystemTime::now();
        for _ in 0..MAX_KEYS {
            keys.mint_at(Duration::from_secs(10), None, t0).unwrap();
        }
        let e = keys.mint_at(Duration::from_secs(10), None, t0).unwrap_err();
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        // Once they have expired (and been remembered a while), there is room.
        let later = t0 + Duration::from_secs(11) + REMEMBER_EXPIRED;
        assert!(keys.mint_at(Duration::from_secs(10), None, later).is_ok());
        assert_eq!(keys.lock().len(), 1);
    }
}
