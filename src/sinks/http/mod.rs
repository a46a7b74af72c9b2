//! HTTP sink (reqwest over rustls): one request per delivery to a receiver's URL, with the body
//! as the event, the raw ArcGIS payload, a Teams or Slack message or any tera template; headers
//! and authentication from secrets; Standard Webhooks or GitHub-style signatures; a rate limit
//! and a bound on requests in flight so that a slow or strict receiver is not flooded. Answers
//! decide the outcome (`errors.rs`): 2xx delivered, 408/429/5xx retried (honouring
//! `Retry-After`), other 4xx dead-lettered, an unreachable receiver backs the sink off as a whole.
//!
//! `config.rs` holds the settings and their checks and builds the rest, `encode.rs` turns a
//! delivery into a request, `url_template.rs` gives it a URL no event value can steer,
//! `headers.rs` checks its headers and adds
//! `auth`'s, `sign.rs` signs it, `send.rs` sends it, `errors.rs` reads the answer;
//! the settings each of those reads are declared beside it, and none of them imports `config.rs`.

mod config;
mod encode;
mod errors;
mod headers;
mod send;
mod sign;
mod url_template;

pub use config::HttpConfig;
