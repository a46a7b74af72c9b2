//! `GET /hooks/{hook}?crc_token=T`: the challenge ArcGIS sends when a feature-service (or
//! Enterprise service) webhook with a signature key is created or edited.
//!
//! The answer is `sha256=base64(HMAC(first secret, T))`, which is byte for byte the
//! `x-esriHook-Signature` of a body `T`. So a token is answered only when no delivery of any hook
//! kind could be that body: at most [`MAX_TOKEN`] characters, all of them letters, digits or
//! `- . _ ~ + / =`. Every payload is JSON, whose object or array needs `{` or `[`, and a form body
//! carries that JSON either as it is or percent-encoded (`%`): neither fits the alphabet, raw or
//! form-encoded, so an answer never signs a delivery. Anything else is refused with 400 and
//! nothing signed.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::hooks::{IngressError, find_hook};
use crate::senders::HookKind;
use crate::signature;
use crate::state::AppState;

/// The longest CRC token answered: random tokens are tens of characters long.
pub const MAX_TOKEN: usize = 256;

/// Why a CRC challenge is not answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CrcError {
    /// Empty, too long, or holding a character outside the token alphabet.
    #[error(
        "crc_token must be 1 to {MAX_TOKEN} letters, digits or - . _ ~ + / = (a token that could be a delivery body is never signed)"
    )]
    BadToken,
    /// The hook's kind of sender never sends CRC challenges.
    #[error(
        "this hook's kind ({0}) is not sent CRC challenges; only feature-service, geoprocessing and auto hooks answer them"
    )]
    NotSent(&'static str),
    /// The hook has no secret to answer with.
    #[error("this hook has no secret, so it cannot answer a CRC challenge")]
    NoSecret,
}

impl CrcError {
    fn label(&self) -> &'static str {
        match self {
            CrcError::BadToken => "bad_crc_token",
            CrcError::NotSent(_) => "crc_not_supported",
            CrcError::NoSecret => "no_secret",
        }
    }
}

/// Whether `token` may be answered: short, and of an alphabet no delivery body fits.
pub fn token_is_answerable(token: &str) -> bool {
    (1..=MAX_TOKEN).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
}

/// The `response_token` for `token` on a hook of `kind` whose first secret is `key`.
pub fn answer(kind: HookKind, key: Option<&[u8]>, token: &str) -> Result<String, CrcError> {
    if !kind.sends_crc() {
        return Err(CrcError::NotSent(kind.name()));
    }
    if !token_is_answerable(token) {
        return Err(CrcError::BadToken);
    }
    let key = key.ok_or(CrcError::NoSecret)?;
    Ok(signature::arcgis::sign(key, token.as_bytes()))
}

/// Query of `GET /hooks/{hook}`.
#[derive(Deserialize)]
pub struct CrcQuery {
    crc_token: Option<String>,
}

/// `GET /hooks/{hook}`: the CRC answer with `?crc_token=`, else a check that the URL answers.
/// It never touches the queue, so it answers fast even while the queue refuses writes.
pub async fn check(
    hook: web::Path<String>,
    query: web::Query<CrcQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let config = state.config();
    let Some(h) = find_hook(&config, &hook) else {
        return IngressError::UnknownHook.response();
    };
    let Some(token) = &query.crc_token else {
        return HttpResponse::Ok().json(json!({ "hook": hook.as_str(), "status": "ok" }));
    };
    let key = h.secrets.first().map(|s| s.expose().as_bytes());
    match answer(h.kind, key, token) {
        Ok(signed) => HttpResponse::Ok().json(json!({ "response_token": signed })),
        Err(e) => {
            tracing::info!(
                hook = hook.as_str(),
                reason = e.label(),
                "CRC challenge refused"
            );
            HttpResponse::BadRequest().json(json!({ "error": e.label(), "message": e.to_string() }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str) -> HookKind {
        HookKind::named(name).unwrap()
    }

    #[test]
    fn the_protocol_check_value_is_answered() {
        assert_eq!(
            answer(kind("feature-service"), Some(b"MYSECRETKEY"), "abc123").as_deref(),
            Ok("sha256=JZBRSjXI4VWGz/kfx+MhyuzBzDmFvu6acHbGAAl80LU=")
        );
    }

    #[test]
    fn no_body_shape_is_a_token() {
        for t in [
            "{\"info\":{}}",
            "[{}]",
            "payload=%7B%7D",
            "payload={}",
            "%5B%5D",
            "",
            "a b",
            &"a".repeat(MAX_TOKEN + 1),
        ] {
            assert_eq!(
                answer(HookKind::Auto, Some(b"k"), t),
                Err(CrcError::BadToken),
                "{t:?}"
            );
        }
        assert!(token_is_answerable(&"a".repeat(MAX_TOKEN)));
        assert!(token_is_answerable("Zm9vYmFy+/=-._~"));
    }

    #[test]
    fn only_kinds_arcgis_challenges_answer() {
        assert_eq!(
            answer(kind("portal"), Some(b"k"), "abc"),
            Err(CrcError::NotSent("portal"))
        );
        assert_eq!(
            answer(kind("survey123"), Some(b"k"), "abc"),
            Err(CrcError::NotSent("survey123"))
        );
        assert_eq!(
            answer(kind("geoprocessing"), None, "abc"),
            Err(CrcError::NoSecret)
        );
    }
}
