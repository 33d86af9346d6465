//! Logging in and out, and who is asking: sessions in the database behind an HttpOnly cookie,
//! argon2 password hashes, and the per-session CSRF token every form sends back.
//!
//! The `admin` user comes from configuration (`SLUICE_ADMIN_PASSWORD` or
//! `ui.admin_password_hash`); everyone else from `sluice user add`.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Instant;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::throttle::{self, Admission};
use super::{Result, SESSION_COOKIE, WebError, WebState, iso, local_path, render};
use crate::store::{Role, SessionRecord};

/// The user name whose password comes from configuration.
pub const ADMIN: &str = "admin";

/// A password that could not be hashed (the random source failed).
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

/// An argon2id hash of `password` with a fresh random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches the PHC string `hash`. A malformed hash matches nothing.
pub fn verify_password(hash: &str, password: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// A hash no password matches, verified for unknown users so that a login for a name that
/// does not exist takes as long as one with a wrong password.
static DECOY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password("decoy password for unknown users").unwrap_or_default());

/// A random token: 244 bits from the operating system's generator, as hex.
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The database key of a session: the SHA-256 of its cookie value.
pub(super) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares in time that depends only on the lengths.
pub(super) fn same(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of the cookie `wanted`, unless it is missing or empty.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, wanted: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE)
}

/// The logged-in user of a request. Extracting it from a request without a live session
/// redirects page views to the login page and refuses everything else with 403.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    token_hash: String,
}

impl Session {
    /// Checks the CSRF token a form sent back, and that the role may change things.
    pub fn authorize_action(&self, csrf: &str) -> Result<()> {
        if !same(&self.csrf, csrf) {
            return Err(WebError::Forbidden(
                "the form's security token is missing or out of date; reload the page and try again"
                    .into(),
            ));
        }
        if !self.role.may_act() {
            return Err(WebError::Forbidden(format!(
                "user `{}` is a {} and may only look; an operator or admin may do this",
                self.user, self.role
            )));
        }
        Ok(())
    }

    /// What the layout shows about the user.
    pub fn view(&self) -> minijinja::Value {
        minijinja::context! {
            name => self.user.clone(),
            role => self.role.as_str(),
            may_act => self.role.may_act(),
            csrf => self.csrf.clone(),
        }
    }
}

impl FromRequestParts<WebState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Response> {
        let found = match session_cookie(&parts.headers) {
            Some(token) => {
                let hash = token_hash(token);
                state
                    .store
                    .session(&hash, Utc::now())
                    .await
                    .map_err(|e| WebError::from(e).into_response())?
                    .map(|s| (hash, s))
            }
            None => None,
        };
        match found {
            Some((token_hash, record)) => Ok(Session {
                user: record.user_name,
                role: record.role,
                csrf: record.csrf_token,
                token_hash,
            }),
            None if matches!(parts.method, Method::GET | Method::HEAD) => {
                let target = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let next: String = url_encode(target);
                Err(Redirect::to(&format!("/login?next={next}")).into_response())
            }
            None => Err(WebError::Forbidden(
                "you are not logged in (or your session expired); log in and try again".into(),
            )
            .into_response()),
        }
    }
}

/// Percent-encodes everything but unreserved characters, for a query value.
pub(super) fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// The cookie that pairs a login form with the browser that loaded it.
const LOGIN_COOKIE: &str = "sluice_login";

/// The login page with a fresh form token, set both in the form and in a cookie: a login
/// posted from another site lacks the cookie (SameSite) and is refused, so nobody can log a
/// visitor in to an account of their choosing.
fn login_form(
    state: &WebState,
    status: StatusCode,
    next: &str,
    name: &str,
    error: Option<&str>,
) -> Result<Response> {
    login_form_until(state, status, next, name, error, None)
}

/// The login page with an error and, when logins are throttled, the time to try again after.
fn login_form_until(
    state: &WebState,
    status: StatusCode,
    next: &str,
    name: &str,
    error: Option<&str>,
    retry_at: Option<DateTime<Utc>>,
) -> Result<Response> {
    let token = random_token();
    let page = render(
        "login.html",
        minijinja::context! {
            title => "Log in", next, name, error, login_token => token.clone(),
            retry_at => retry_at.map(iso),
        },
    )?;
    let secure = if state.settings.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{LOGIN_COOKIE}={token}; Path=/login; HttpOnly; SameSite=Lax; Max-Age=3600{secure}"
    );
    let mut response = (status, page).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie)
            .map_err(|e| WebError::Internal(format!("cannot build the login cookie: {e}")))?,
    );
    if let Some(at) = retry_at {
        let seconds = (at - Utc::now()).num_seconds().max(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    Ok(response)
}

/// `GET /login`.
pub async fn login_page(
    State(state): State<WebState>,
    Query(query): Query<NextQuery>,
) -> Result<Response> {
    let next = query.next.as_deref().and_then(local_path).unwrap_or("/");
    login_form(&state, StatusCode::OK, next, "", None)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    next: String,
    /// The token of the form, matched against the login cookie.
    #[serde(default)]
    login_token: String,
}

/// Who `name` is, if `password` is theirs.
async fn check_password(state: &WebState, name: &str, password: &str) -> Result<Option<Role>> {
    let (hash, role) = if name == ADMIN {
        match &state.settings.admin_password_hash {
            Some(hash) => (Some(hash.clone()), Role::Admin),
            None => (None, Role::Admin),
        }
    } else {
        match state.store.user(name).await? {
            Some(user) => (Some(user.password_hash), user.role),
            None => (None, Role::Viewer),
        }
    };
    let password = password.to_owned();
    // argon2 takes tens of milliseconds of CPU on purpose: keep it off the async threads.
    let matches = tokio::task::spawn_blocking(move || match hash {
        Some(hash) => verify_password(&hash, &password),
        None => {
            verify_password(&DECOY_HASH, &password);
            false
        }
    })
    .await
    .map_err(|e| WebError::Internal(format!("the password check stopped: {e}")))?;
    Ok(matches.then_some(role))
}

/// `POST /login`: checks the password, starts a session and sets its cookie. Attempts are
/// throttled per client address and per name (`web::throttle`) before any password is checked.
pub async fn login(
    State(state): State<WebState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response> {
    let next = local_path(&form.next).unwrap_or("/").to_owned();
    let address = peer.map(|Extension(ConnectInfo(a))| a.ip());
    if let Admission::Refused { retry_after, first } =
        state.login_limiter.admit(address, Instant::now())
    {
        if first {
            warn!(address = ?address, "Too many UI login attempts from one address; refusing them for the rest of the minute.");
        }
        let retry_at = Utc::now()
            + chrono::Duration::from_std(retry_after).unwrap_or(chrono::Duration::minutes(1));
        return login_form_until(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            &next,
            &form.name,
            Some("Too many login attempts from your address."),
            Some(retry_at),
        );
    }
    let paired = cookie(&headers, LOGIN_COOKIE).is_some_and(|c| same(c, &form.login_token));
    if !paired {
        return login_form(
            &state,
            StatusCode::FORBIDDEN,
            &next,
            &form.name,
            Some("The login form expired or came from another site; please log in again."),
        );
    }
    let key = throttle::name_key(&form.name);
    let now = Utc::now();
    let recent = state
        .store
        .recent_login_failures(key, now - throttle::FAILURE_WINDOW, throttle::MAX_FAILURES)
        .await?;
    // A locked name is refused without checking the password, the right one included.
    if let Some(until) = throttle::locked_until(&recent, now) {
        info!(user = ?form.name, address = ?address, until = %iso(until), "A UI login for a locked name was refused.");
        return locked_out(&state, &next, &form.name, until);
    }
    let Some(role) = check_password(&state, &form.name, &form.password).await? else {
        let failed_at = Utc::now();
        state
            .store
            .record_login_failure(key, failed_at, failed_at - throttle::FAILURE_WINDOW)
            .await?;
        let mut failures = recent;
        failures.insert(0, failed_at);
        if let Some(until) = throttle::locked_until(&failures, failed_at) {
            warn!(user = ?form.name, address = ?address, until = %iso(until), "A UI user name is locked after repeated failed logins.");
        } else {
            info!(user = ?form.name, address = ?address, "A UI login was refused.");
        }
        return login_form(
            &state,
            StatusCode::UNAUTHORIZED,
            &next,
            &form.name,
            Some("The user name or the password is wrong."),
        );
    };
    if !recent.is_empty() {
        state.store.clear_login_failures(key).await?;
    }
    let token = random_token();
    let now = Utc::now();
    let lifetime = state.settings.session_lifetime;
    let expires_at =
        now + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(12));
    state
        .store
        .create_session(
            &token_hash(&token),
            &SessionRecord {
                user_name: form.name.clone(),
                role,
                csrf_token: random_token(),
                expires_at,
            },
            now,
        )
        .await?;
    info!(user = %form.name, role = %role, "A user logged in to the UI.");
    let secure = if state.settings.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        lifetime.as_secs()
    );
    let mut response = Redirect::to(&next).into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie)
            .map_err(|e| WebError::Internal(format!("cannot build the session cookie: {e}")))?,
    );
    headers.append(
        header::SET_COOKIE,
        HeaderValue::from_static("sluice_login=; Path=/login; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    Ok(response)
}

/// The answer to a login for a locked name: 429 and when to try again.
fn locked_out(state: &WebState, next: &str, name: &str, until: DateTime<Utc>) -> Result<Response> {
    login_form_until(
        state,
        StatusCode::TOO_MANY_REQUESTS,
        next,
        name,
        Some("Too many failed logins for this user name."),
        Some(until),
    )
}

/// `GET /logout`: a page with the logout button (logging out is a POST with the token).
pub async fn logout_page(session: Session) -> Result<Response> {
    Ok(render(
        "logout.html",
        minijinja::context! { title => "Log out", user => session.view() },
    )?
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
    /// The page to go back to afterwards (a path on this site).
    #[serde(default)]
    pub back: Option<String>,
}

/// `POST /logout`: ends the session and clears the cookie.
pub async fn logout(
    State(state): State<WebState>,
    session: Session,
    Form(form): Form<CsrfForm>,
) -> Result<Response> {
    if !same(&session.csrf, &form.csrf) {
        return Err(WebError::Forbidden(
            "the form's security token is missing or out of date; reload the page and try again"
                .into(),
        ));
    }
    state.store.delete_session(&session.token_hash).await?;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sluice_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "correct horse "));
        assert!(!verify_password("not a hash", "correct horse"));
        assert_ne!(
            hash,
            hash_password("correct horse").expect("hash"),
            "salted"
        );
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        assert_eq!(session_cookie(&headers), None);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; sluice_session=tok; b=2"),
        );
        assert_eq!(session_cookie(&headers), Some("tok"));
        headers.insert(header::COOKIE, HeaderValue::from_static("sluice_session="));
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn tokens_are_random_and_compared_exactly() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &b));
        assert!(!same(&a, ""));
        assert_eq!(url_encode("/runs/a?b=c&d"), "/runs/a%3Fb%3Dc%26d");
    }
}
