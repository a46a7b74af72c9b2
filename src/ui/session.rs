//! Status page sessions: signed in with the admin token, held in an `HttpOnly`, `SameSite=Strict`
//! cookie, each with its own CSRF token for the forms that change state.
//!
//! Sessions live in memory: a restart signs everyone out, which is the safe failure. A session
//! also ends when the admin token changes (it remembers a digest of the token it was opened
//! with), so rotating the token signs every browser out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::cookie::{Cookie, SameSite};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "hookbridge_session";
/// How long a session lasts after sign-in.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Most sessions held; the oldest goes first when a sign-in would pass this.
const MAX_SESSIONS: usize = 256;

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token every state-changing form must carry.
    pub csrf: String,
    expires: Instant,
    token: [u8; 32],
}

impl Session {
    /// Whether `given` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, given: Option<&str>) -> bool {
        given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(self.csrf.as_bytes())))
    }
}

/// The open sessions, by cookie value.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes as hex, from the thread's cryptographically secure generator.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for a browser that gave the right `token`; returns its cookie value.
    pub fn open(&self, token: &str) -> String {
        let now = Instant::now();
        let mut open = self.lock();
        open.retain(|_, s| s.expires > now);
        while open.len() >= MAX_SESSIONS {
            let oldest = open
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => open.remove(&id),
                None => break,
            };
        }
        let id = random_hex();
        open.insert(
            id.clone(),
            Session {
                csrf: random_hex(),
                expires: now + LIFETIME,
                token: digest(token),
            },
        );
        id
    }

    /// The live session for a cookie value, opened with the current `token`.
    pub fn get(&self, id: &str, token: &str) -> Option<Session> {
        let mut open = self.lock();
        let session = open.get(id)?.clone();
        let current = bool::from(session.token.ct_eq(&digest(token)));
        if session.expires <= Instant::now() || !current {
            open.remove(id);
            return None;
        }
        Some(session)
    }

    /// Ends a session.
    pub fn close(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// The session cookie: only sent back to `/ui`, never readable by scripts, never sent on
/// requests from other sites, and over TLS only when the daemon serves TLS.
pub fn cookie(id: String, secure: bool) -> Cookie<'static> {
    Cookie::build(COOKIE, id)
        .path("/ui")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(actix_web::cookie::time::Duration::seconds(
            LIFETIME.as_secs() as i64,
        ))
        .finish()
}

/// A cookie that makes the browser forget the session cookie.
pub fn removal(secure: bool) -> Cookie<'static> {
    let mut c = cookie(String::new(), secure);
    c.make_removal();
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_flags() {
        let plain = cookie("abc".into(), false).to_string();
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=28800"] {
            assert!(plain.contains(flag), "{plain}");
        }
        assert!(!plain.contains("Secure"), "{plain}");
        let tls = cookie("abc".into(), true).to_string();
        assert!(tls.contains("Secure"), "{tls}");
        assert!(removal(true).to_string().contains("Max-Age=0"));
    }

    #[test]
    fn sessions_end_with_the_token_and_on_close() {
        let s = Sessions::default();
        let id = s.open("t1");
        assert_eq!(id.len(), 64);
        let session = s.get(&id, "t1").expect("open");
        assert!(session.csrf_matches(Some(&session.csrf)));
        assert!(!session.csrf_matches(Some("x")));
        assert!(!session.csrf_matches(None));
        assert!(s.get(&id, "t2").is_none(), "another token ends it");
        assert!(s.get(&id, "t1").is_none(), "and it stays ended");
        let id = s.open("t1");
        s.close(&id);
        assert!(s.get(&id, "t1").is_none());
        assert!(s.get("nonsense", "t1").is_none());
    }

    #[test]
    fn sessions_are_bounded() {
        let s = Sessions::default();
        let first = s.open("t");
        for _ in 0..MAX_SESSIONS {
            s.open("t");
        }
        assert_eq!(s.lock().len(), MAX_SESSIONS);
        assert!(s.get(&first, "t").is_none());
    }
}
