//! ArcGIS tokens: fetched, cached in memory only, renewed before expiry and after a 498/499.

use std::fmt;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::FetchError;
use super::config::{Auth, ConnectionConfig};

/// A token; its Debug form is redacted so that it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The token text, for the one place it is sent: a request to a configured service.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

struct Cached {
    token: Token,
    renew_at: Instant,
}

/// Where a connection's tokens come from, and the one it holds now.
pub struct TokenSource {
    config: ConnectionConfig,
    client: reqwest::Client,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

impl TokenSource {
    /// A source for `config`, using `client` for the portal calls.
    pub fn new(config: ConnectionConfig, client: reqwest::Client) -> Self {
        TokenSource {
            config,
            client,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The current token, fetching a new one when there is none or it is due for renewal.
    pub async fn get(&self) -> Result<Token, FetchError> {
        let mut slot = self.cached.lock().await;
        if let Some(c) = slot.as_ref() {
            if Instant::now() < c.renew_at {
                return Ok(c.token.clone());
            }
        }
        let (token, lifetime) = self.obtain().await?;
        // Renew at 80% of the lifetime, so that a token never expires mid-fetch.
        let renew_at = Instant::now() + lifetime.mul_f32(0.8);
        *slot = Some(Cached {
            token: token.clone(),
            renew_at,
        });
        Ok(token)
    }

    /// Forgets `used` after ArcGIS refused it (498/499): the next `get` fetches a new one.
    pub async fn invalidate(&self, used: &Token) {
        let mut slot = self.cached.lock().await;
        if slot.as_ref().is_some_and(|c| &c.token == used) {
            *slot = None;
        }
    }

    /// Whether ArcGIS may refuse this token and a new one can be had (not a static key).
    pub fn renewable(&self) -> bool {
        self.config.auth() != Auth::Static
    }

    async fn obtain(&self) -> Result<(Token, Duration), FetchError> {
        let c = &self.config;
        let minutes = (c.token_lifetime.as_secs() / 60).max(1).to_string();
        let portal = c
            .portal
            .as_deref()
            .unwrap_or_default()
            .trim_end_matches('/');
        let (url, form): (String, Vec<(&str, &str)>) = match c.auth() {
            Auth::Static => {
                let t = c.token.as_ref().map(|s| s.expose().to_string());
                return Ok((
                    Token(t.unwrap_or_default()),
                    Duration::from_secs(10 * 365 * 86_400),
                ));
            }
            Auth::App => (
                format!("{portal}/sharing/rest/oauth2/token"),
                vec![
                    ("client_id", c.client_id.as_deref().unwrap_or_default()),
                    (
                        "client_secret",
                        c.client_secret
                            .as_ref()
                            .map(|s| s.expose())
                            .unwrap_or_default(),
                    ),
                    ("grant_type", "client_credentials"),
                    ("expiration", &minutes),
                    ("f", "json"),
                ],
            ),
            Auth::User => (
                format!("{portal}/sharing/rest/generateToken"),
                vec![
                    ("username", c.username.as_deref().unwrap_or_default()),
                    (
                        "password",
                        c.password.as_ref().map(|s| s.expose()).unwrap_or_default(),
                    ),
                    ("client", "requestip"),
                    ("expiration", &minutes),
                    ("f", "json"),
                ],
            ),
        };
        let answer = self
            .client
            .post(&url)
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                FetchError::Token(format!("the portal cannot be reached: {}", e.without_url()))
            })?;
        let status = answer.status();
        if status.is_server_error() {
            return Err(FetchError::Token(format!("the portal answered {status}")));
        }
        let body: Value = answer.json().await.map_err(|e| {
            FetchError::Token(format!(
                "the portal's answer is not JSON: {}",
                e.without_url()
            ))
        })?;
        read_token(&body, c.token_lifetime)
    }
}

/// Reads `{access_token, expires_in}` (OAuth2) or `{token, expires}` (generateToken).
fn read_token(body: &Value, asked: Duration) -> Result<(Token, Duration), FetchError> {
    if let Some(e) = body.get("error") {
        let message = e
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| body.get("error_description").and_then(Value::as_str))
            .or_else(|| e.as_str())
            .unwrap_or("no message");
        return Err(FetchError::Token(format!(
            "the portal refused the credentials: {message}"
        )));
    }
    if let Some(t) = body.get("access_token").and_then(Value::as_str) {
        let secs = body.get("expires_in").and_then(Value::as_u64);
        return Ok((
            Token(t.to_string()),
            secs.map(Duration::from_secs).unwrap_or(asked),
        ));
    }
    if let Some(t) = body.get("token").and_then(Value::as_str) {
        let left = body
            .get("expires")
            .and_then(Value::as_u64)
            .map(|ms| Duration::from_millis(ms.saturating_sub(crate::clock::now_ms())));
        return Ok((Token(t.to_string()), left.unwrap_or(asked)));
    }
    Err(FetchError::Token(
        "the portal's answer has no access_token or token".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_answer_forms_are_read_and_errors_are_errors() {
        let hour = Duration::from_secs(3600);
        let (t, d) = read_token(
            &serde_json::json!({"access_token": "a", "expires_in": 60}),
            hour,
        )
        .unwrap();
        assert_eq!((t.expose(), d), ("a", Duration::from_secs(60)));
        let (t, _) = read_token(&serde_json::json!({"token": "b", "expires": 1}), hour).unwrap();
        assert_eq!(t.expose(), "b");
        let e = read_token(
            &serde_json::json!({"error": {"code": 400, "message": "Invalid client_id"}}),
            hour,
        )
        .unwrap_err();
        assert!(e.to_string().contains("Invalid client_id"), "{e}");
        assert_eq!(format!("{t:?}"), "Token(***)");
    }
}
