//! Intuit's OAuth2 token endpoint (refresh grant, rotation, invalid_grant / invalid_client) and
//! the bearer tokens it issues.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::cli::{Config, Rotation};
use crate::util::StableHash;

/// `x_refresh_token_expires_in` returned with every refresh (101 days, as Intuit's mocks show).
pub const REFRESH_TOKEN_TTL_SECS: u64 = 8_726_400;

/// Why a refresh failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    InvalidClient,
    InvalidGrant(String),
    InvalidRequest(String),
    UnsupportedGrantType,
}

impl TokenError {
    pub fn status(&self) -> u16 {
        match self {
            TokenError::InvalidClient => 401,
            _ => 400,
        }
    }
    /// Body as Intuit sends it (the invalid_grant variant depends on the token).
    pub fn body(&self) -> String {
        match self {
            TokenError::InvalidClient => "{\"error\":\"invalid_client\"}".to_string(),
            TokenError::InvalidGrant(variant) => variant.clone(),
            TokenError::InvalidRequest(d) => format!(
                "{{\"error_description\":{},\"error\":\"invalid_request\"}}",
                crate::util::json_str(d)
            ),
            TokenError::UnsupportedGrantType => {
                "{\"error\":\"unsupported_grant_type\"}".to_string()
            }
        }
    }
}

/// A successful refresh.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

impl Issued {
    pub fn body(&self) -> String {
        self.body_with_expires_in(&self.expires_in.to_string())
    }

    /// The body with `expires_in` rendered as the given JSON text (faults `badexpires`,
    /// `expires0`).
    pub fn body_with_expires_in(&self, expires_in_json: &str) -> String {
        format!(
            "{{\"x_refresh_token_expires_in\":{REFRESH_TOKEN_TTL_SECS},\"refresh_token\":{},\"access_token\":{},\"token_type\":\"bearer\",\"expires_in\":{expires_in_json}}}",
            crate::util::json_str(&self.refresh_token),
            crate::util::json_str(&self.access_token),
        )
    }
}

/// Token state of the emulator.
#[derive(Debug)]
pub struct Tokens {
    seed: u64,
    client_id: String,
    client_secret: String,
    rotation: Rotation,
    ttl: Duration,
    current_refresh: String,
    uses_of_current: u32,
    generation: u64,
    issued: u64,
    access: HashMap<String, Instant>,
}

impl Tokens {
    pub fn new(cfg: &Config) -> Self {
        Tokens {
            seed: cfg.seed,
            client_id: cfg.client_id.clone(),
            client_secret: cfg.client_secret.clone(),
            rotation: cfg.rotate_refresh,
            ttl: Duration::from_secs(cfg.access_token_ttl),
            current_refresh: cfg.refresh_token.clone(),
            uses_of_current: 0,
            generation: 0,
            issued: 0,
            access: HashMap::new(),
        }
    }

    /// Checks client credentials given by HTTP Basic (`authorization` header value) or in the body.
    pub fn check_client(
        &self,
        basic: Option<&str>,
        body_id: Option<&str>,
        body_secret: Option<&str>,
    ) -> bool {
        if let Some(b) = basic.and_then(|h| {
            h.strip_prefix("Basic ")
                .or_else(|| h.strip_prefix("basic "))
        }) {
            let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b.trim()) else {
                return false;
            };
            let Ok(s) = String::from_utf8(raw) else {
                return false;
            };
            return s.split_once(':') == Some((&self.client_id, &self.client_secret));
        }
        body_id == Some(self.client_id.as_str()) && body_secret == Some(self.client_secret.as_str())
    }

    /// Handles a `grant_type=refresh_token` request (credentials already checked).
    pub fn refresh(&mut self, refresh_token: &str) -> Result<Issued, TokenError> {
        self.refresh_rotating(refresh_token, false)
    }

    /// [`Tokens::refresh`], rotating the refresh token whatever the rotation setting when
    /// `force_rotation` (fault `badexpires`: the new token is current from now on).
    pub fn refresh_rotating(
        &mut self,
        refresh_token: &str,
        force_rotation: bool,
    ) -> Result<Issued, TokenError> {
        if refresh_token != self.current_refresh {
            let variants = [
                "{\"error\":\"invalid_grant\"}",
                "{\"error_description\":\"Token invalid\",\"error\":\"invalid_grant\"}",
                "{\"error_description\":\"Incorrect or invalid refresh token\",\"error\":\"invalid_grant\"}",
            ];
            let i = StableHash::new(self.seed).str(refresh_token).finish() % 3;
            return Err(TokenError::InvalidGrant(variants[i as usize].to_string()));
        }
        self.uses_of_current += 1;
        let rotate = force_rotation
            || match self.rotation {
                Rotation::Never => false,
                Rotation::Always => true,
                Rotation::Every(n) => self.uses_of_current >= n,
            };
        if rotate {
            self.generation += 1;
            self.uses_of_current = 0;
            let h = StableHash::new(self.seed)
                .str("refresh")
                .u64(self.generation)
                .finish();
            self.current_refresh = format!("AB11{:010}emu{h:016x}", self.generation);
        }
        self.issued += 1;
        let h = StableHash::new(self.seed)
            .str("access")
            .u64(self.issued)
            .finish();
        let h2 = crate::util::mix64(h);
        let access = format!(
            "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0..emu{:06}.{h:016x}{h2:016x}",
            self.issued
        );
        self.access
            .insert(access.clone(), Instant::now() + self.ttl);
        Ok(Issued {
            access_token: access,
            refresh_token: self.current_refresh.clone(),
            expires_in: self.ttl.as_secs(),
        })
    }

    /// Checks a bearer token; the error is the 401 `detail`.
    pub fn check_access(&self, token: Option<&str>) -> Result<(), String> {
        let Some(t) = token else {
            return Err("Authorization header missing or not a Bearer token".to_string());
        };
        let short: String = t.chars().take(50).collect();
        match self.access.get(t) {
            Some(exp) if Instant::now() < *exp => Ok(()),
            Some(_) => Err(format!("Token expired: {short}")),
            None => Err(format!("Token invalid: {short}")),
        }
    }

    /// Expires an access token at once (fault `401`).
    pub fn expire(&mut self, token: &str) {
        if let Some(exp) = self.access.get_mut(token) {
            *exp = Instant::now();
        }
    }

    pub fn current_refresh(&self) -> &str {
        &self.current_refresh
    }

    /// Access tokens still valid.
    pub fn valid_access_count(&self) -> usize {
        let now = Instant::now();
        self.access.values().filter(|e| **e > now).count()
    }

    pub fn issued(&self) -> u64 {
        self.issued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(args: &[&str]) -> Tokens {
        Tokens::new(&Config::from_args(args.iter().copied()).unwrap())
    }

    #[test]
    fn never_rotates() {
        let mut t = tokens(&[]);
        let a = t.refresh("emu-refresh-token-0").unwrap();
        let b = t.refresh("emu-refresh-token-0").unwrap();
        assert_eq!(a.refresh_token, "emu-refresh-token-0");
        assert_ne!(a.access_token, b.access_token);
        assert!(t.check_access(Some(&a.access_token)).is_ok());
        assert!(t
            .check_access(Some("nope"))
            .unwrap_err()
            .starts_with("Token invalid"));
        t.expire(&a.access_token);
        assert!(t
            .check_access(Some(&a.access_token))
            .unwrap_err()
            .starts_with("Token expired"));
    }

    #[test]
    fn always_rotates_and_supersedes() {
        let mut t = tokens(&["--rotate-refresh", "always"]);
        let a = t.refresh("emu-refresh-token-0").unwrap();
        assert_ne!(a.refresh_token, "emu-refresh-token-0");
        let e = t.refresh("emu-refresh-token-0").unwrap_err();
        assert!(matches!(e, TokenError::InvalidGrant(ref b) if b.contains("invalid_grant")));
        assert_eq!(e.status(), 400);
        let b = t.refresh(&a.refresh_token).unwrap();
        assert_ne!(b.refresh_token, a.refresh_token);
    }

    #[test]
    fn every_n_rotates() {
        let mut t = tokens(&["--rotate-refresh", "every=2"]);
        assert_eq!(
            t.refresh("emu-refresh-token-0").unwrap().refresh_token,
            "emu-refresh-token-0"
        );
        let r = t.refresh("emu-refresh-token-0").unwrap().refresh_token;
        assert_ne!(r, "emu-refresh-token-0");
        assert!(t.refresh("emu-refresh-token-0").is_err());
    }

    #[test]
    fn forced_rotation_supersedes_even_when_never_rotating() {
        let mut t = tokens(&[]);
        let a = t.refresh_rotating("emu-refresh-token-0", true).unwrap();
        assert_ne!(a.refresh_token, "emu-refresh-token-0");
        assert_eq!(t.current_refresh(), a.refresh_token);
        assert!(t.refresh("emu-refresh-token-0").is_err());
        assert!(a
            .body_with_expires_in("\"3600\"")
            .ends_with("\"expires_in\":\"3600\"}"));
        let b = t.refresh(&a.refresh_token).unwrap();
        assert_eq!(b.refresh_token, a.refresh_token);
    }

    #[test]
    fn client_credentials() {
        let t = tokens(&[]);
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("emu-client-id:emu-client-secret")
        );
        assert!(t.check_client(Some(&basic), None, None));
        assert!(!t.check_client(Some("Basic Zm9vOmJhcg=="), None, None));
        assert!(t.check_client(None, Some("emu-client-id"), Some("emu-client-secret")));
        assert!(!t.check_client(None, Some("emu-client-id"), Some("x")));
        assert_eq!(TokenError::InvalidClient.status(), 401);
    }
}
