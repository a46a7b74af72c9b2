//! Delivery bodies, before anything is verified or parsed: the encoding from the Content-Type,
//! JSON (compact or pretty) or a form with a `payload` field in either of its layouts, and the
//! texts a signature may cover.

use std::borrow::Cow;

use crate::verify::SIGNATURE_HEADER;

/// Why a form body was refused (answered with 400): no usable `payload` field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct FormError(String);

/// How the body is encoded, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    /// `application/json` (json and pjson alike).
    Json,
    /// `application/x-www-form-urlencoded` with `payload=<json>`.
    Form,
}

/// Why a Content-Type was refused (answered with 415).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContentTypeError {
    /// No Content-Type header.
    #[error("missing Content-Type: expected application/json or application/x-www-form-urlencoded")]
    Missing,
    /// Some other media type.
    #[error(
        "unsupported Content-Type {0:?}: expected application/json or application/x-www-form-urlencoded"
    )]
    Unsupported(String),
    /// A charset other than UTF-8.
    #[error("unsupported charset {0:?}: expected utf-8")]
    Charset(String),
}

impl BodyEncoding {
    /// Picks the encoding from a Content-Type header value.
    pub fn from_content_type(value: Option<&str>) -> Result<Self, ContentTypeError> {
        let value = value.ok_or(ContentTypeError::Missing)?;
        let mut parts = value.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        for param in parts {
            if let Some((k, v)) = param.split_once('=') {
                if k.trim().eq_ignore_ascii_case("charset") {
                    let cs = v.trim().trim_matches('"').to_ascii_lowercase();
                    if cs != "utf-8" && cs != "utf8" && cs != "us-ascii" {
                        return Err(ContentTypeError::Charset(cs));
                    }
                }
            }
        }
        let short: String = value.chars().take(80).collect();
        match media.as_str() {
            "application/json" | "text/json" => Ok(BodyEncoding::Json),
            "application/x-www-form-urlencoded" => Ok(BodyEncoding::Form),
            "" => Err(ContentTypeError::Missing),
            _ => Err(ContentTypeError::Unsupported(short)),
        }
    }
}

/// A body reduced to the JSON text of its payload.
#[derive(Debug)]
pub struct DecodedBody<'a> {
    /// The payload's JSON text.
    pub json: Cow<'a, [u8]>,
    /// A signature sent as a form field instead of a header.
    pub form_signature: Option<String>,
    /// Texts the signature may have been computed over, most likely first.
    pub signed_candidates: Vec<Cow<'a, [u8]>>,
}

/// Extracts the payload JSON from a body.
pub fn decode(encoding: BodyEncoding, body: &[u8]) -> Result<DecodedBody<'_>, FormError> {
    match encoding {
        BodyEncoding::Json => Ok(DecodedBody {
            json: Cow::Borrowed(body),
            form_signature: None,
            signed_candidates: vec![Cow::Borrowed(body)],
        }),
        BodyEncoding::Form => decode_form(body),
    }
}

/// A form body arrives in one of two layouts (docs/arcgis.md, "Authentication"):
/// 1. `payload=<JSON>` with the JSON as it is (only string values carry escapes), which is what
///    Esri's own receiver reads: the signature is over those raw bytes, and they are the JSON;
/// 2. `payload=<the JSON percent-encoded as a whole>`: the JSON is the decoded value.
///
/// Layout 1 is never decoded: a form decoder turns `+` into a space and rewrites `%3a`, so its
/// output is neither what was signed nor what was sent.
fn decode_form(body: &[u8]) -> Result<DecodedBody<'_>, FormError> {
    let mut decoded: Option<Cow<'_, str>> = None;
    let mut signature = None;
    let mut payloads = 0;
    for (k, v) in form_urlencoded::parse(body) {
        if k == "payload" {
            payloads += 1;
            decoded = Some(v);
        } else if k.eq_ignore_ascii_case(SIGNATURE_HEADER) {
            if signature.is_some() {
                return Err(FormError(format!(
                    "the form has more than one {SIGNATURE_HEADER} field"
                )));
            }
            signature = Some(v.into_owned());
        }
    }
    if payloads > 1 {
        return Err(FormError(format!(
            "the form has {payloads} payload fields; expected exactly one"
        )));
    }
    let Some(decoded) = decoded else {
        return Err(FormError(
            "the form has no payload field; expected payload=<json>".into(),
        ));
    };
    let mut candidates = Vec::with_capacity(4);
    let raw = raw_payload_value(body);
    if let Some(raw) = raw {
        candidates.push(Cow::Borrowed(raw));
    }
    candidates.push(Cow::Borrowed(body));
    if let Some(unsigned) = strip_signature_field(body) {
        candidates.push(Cow::Owned(unsigned));
    }
    let json = match raw.filter(|r| is_json(r)) {
        // Layout 1, or a sender that left `&` unescaped inside the JSON (the raw text up to the
        // signature field is then the JSON).
        Some(raw) => Cow::Borrowed(raw),
        None => {
            // Layout 2: what the sender encoded is the decoded value, so it may have signed that.
            let text = decoded.into_owned().into_bytes();
            candidates.push(Cow::Owned(text.clone()));
            Cow::Owned(text)
        }
    };
    Ok(DecodedBody {
        json,
        form_signature: signature,
        signed_candidates: candidates,
    })
}

fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// The `payload` field's value exactly as it is on the wire: up to the next `&`, or, when that
/// is not JSON, up to the signature field (a sender that did not escape `&` inside the JSON).
fn raw_payload_value(body: &[u8]) -> Option<&[u8]> {
    let start = body
        .split(|b| *b == b'&')
        .scan(0usize, |offset, field| {
            let at = *offset;
            *offset += field.len() + 1;
            Some((at, field))
        })
        .find(|(_, field)| field.starts_with(b"payload="))
        .map(|(at, _)| at + b"payload=".len())?;
    let rest = &body[start..];
    let next = rest.iter().position(|b| *b == b'&').unwrap_or(rest.len());
    if next == rest.len() || is_json(&rest[..next]) {
        return Some(&rest[..next]);
    }
    let lower = rest.to_ascii_lowercase();
    let marker = format!("&{}=", SIGNATURE_HEADER.to_ascii_lowercase());
    let end = lower
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .unwrap_or(rest.len());
    let long = &rest[..end];
    Some(if is_json(long) { long } else { &rest[..next] })
}

/// The body with its `x-esriHook-Signature=` field removed, if it had one.
fn strip_signature_field(body: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    let prefix = format!("{}=", SIGNATURE_HEADER.to_ascii_lowercase());
    let kept: Vec<&str> = text
        .split('&')
        .filter(|p| !p.to_ascii_lowercase().starts_with(&prefix))
        .collect();
    let joined = kept.join("&");
    (joined.len() != text.len()).then(|| joined.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        use BodyEncoding::*;
        assert_eq!(
            BodyEncoding::from_content_type(Some("application/json")),
            Ok(Json)
        );
        assert_eq!(
            BodyEncoding::from_content_type(Some("Application/JSON; charset=UTF-8")),
            Ok(Json)
        );
        assert_eq!(
            BodyEncoding::from_content_type(Some("application/x-www-form-urlencoded")),
            Ok(Form)
        );
        assert_eq!(
            BodyEncoding::from_content_type(None),
            Err(ContentTypeError::Missing)
        );
        assert!(matches!(
            BodyEncoding::from_content_type(Some("text/xml")),
            Err(ContentTypeError::Unsupported(_))
        ));
        assert!(matches!(
            BodyEncoding::from_content_type(Some("application/json; charset=iso-8859-1")),
            Err(ContentTypeError::Charset(_))
        ));
    }

    #[test]
    fn form_payload_and_signature_field() {
        let body = b"payload=%5B%5D&x-esriHook-Signature=sha256%3Dabc";
        let d = decode(BodyEncoding::Form, body).unwrap();
        assert_eq!(&*d.json, b"[]");
        assert_eq!(d.form_signature.as_deref(), Some("sha256=abc"));
        assert!(
            d.signed_candidates
                .iter()
                .any(|c| &**c == b"payload=%5B%5D")
        );
    }

    #[test]
    fn unescaped_json_in_a_form() {
        let body = br#"payload=[{"changesUrl":"https://x/y?a=1&b=2","events":[]}]"#;
        let d = decode(BodyEncoding::Form, body).unwrap();
        assert!(serde_json::from_slice::<serde_json::Value>(&d.json).is_ok());
    }

    #[test]
    fn form_refusals() {
        assert!(decode(BodyEncoding::Form, b"a=1").is_err());
        assert!(decode(BodyEncoding::Form, b"payload=1&payload=2").is_err());
    }
}
