//! Bearer-token checks for `/api/v1`. Changes always need a valid token; reads need one as
//! soon as any token is configured. Without tokens a server is read-only, because an open
//! server that accepts changes from anyone is never what someone meant to deploy.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::debug;

use super::{AppState, Error};

pub(super) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    if state.api_tokens.is_empty() {
        if reading {
            return next.run(request).await;
        }
        return Error::Unauthorized(NO_TOKEN_CONFIGURED.into()).into_response();
    }
    match bearer(request.headers()) {
        Some(given) if state.api_tokens.iter().any(|t| same(t, given)) => next.run(request).await,
        Some(_) => {
            debug!(path = %request.uri().path(), "A request with an unknown token was refused.");
            Error::Unauthorized("the bearer token is not valid".into()).into_response()
        }
        None => Error::Unauthorized(
            "this server needs an API token for every request: send one of its tokens as \
             `Authorization: Bearer <token>`"
                .into(),
        )
        .into_response(),
    }
}

/// Why a change is refused by a server without tokens, and how to configure one: the keys
/// named here are the ones the configuration accepts.
const NO_TOKEN_CONFIGURED: &str = "this server has no API token configured, so it accepts no \
     changes: set SLUICE_API_TOKEN (or `tokens = [\"…\"]` under `[api]` in sluice.toml) when \
     starting it, and send that token as `Authorization: Bearer <token>`";

/// The token of an `Authorization: Bearer …` header, if there is one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares in time that depends only on the lengths, so response timing does not reveal
/// how much of a token was right.
fn same(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_headers_are_parsed_strictly() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        for (raw, want) in [
            ("Bearer abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer", None),
            ("Bearer ", None),
        ] {
            headers.insert(header::AUTHORIZATION, raw.parse().expect("header"));
            assert_eq!(bearer(&headers), want, "{raw:?}");
        }
    }

    #[test]
    fn the_no_token_message_names_the_keys_the_configuration_accepts() {
        let path = std::path::Path::new("/srv/sluice.toml");
        let overrides = crate::config::Overrides::default();
        let config = crate::config::Config::from_toml("[api]\ntokens = [\"t\"]\n", path, overrides)
            .expect("`[api] tokens` is a key");
        assert_eq!(config.api_tokens, ["t"]);
        assert!(NO_TOKEN_CONFIGURED.contains("under `[api]`"));
        assert!(NO_TOKEN_CONFIGURED.contains("SLUICE_API_TOKEN"));
        assert!(!NO_TOKEN_CONFIGURED.contains("api_tokens"));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(same("secret", "secret"));
        assert!(!same("secret", "secreT"));
        assert!(!same("secret", "secret2"));
        assert!(!same("secret", ""));
    }
}
