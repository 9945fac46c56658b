//! Dashboard authentication: the login form, signed session cookies, CSRF tokens and the
//! middleware that guards every page.
//!
//! A session cookie is `EXPIRY.NONCE.MAC`: the expiry (Unix seconds), a random nonce and an
//! HMAC-SHA256 of both under a key drawn at start (so a restart logs everyone out). It is
//! `HttpOnly`, `SameSite=Strict`, `Path=/` (and `Secure` when `public_url` is https). The
//! CSRF token of a session is an HMAC of its nonce under the same key: forms carry it in the
//! field `csrf`, scripts in the header `X-CSRF-Token`. A request that carries the Bearer token
//! instead of the cookie needs no CSRF token (a browser never adds that header by itself).
//! State-changing requests whose `Origin` is another site are refused as well.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE,
    WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::WebState;
use super::form::{parse_form, safe_next};
use super::templates::render_page;
use crate::api::auth::ApiToken;

/// The cookie's name.
pub(super) const COOKIE_NAME: &str = "agent_session";
/// How long a session lasts.
pub(super) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The largest form body read.
pub(super) const MAX_FORM: usize = 1 << 20;

/// Who a request is, once authenticated (a request extension).
#[derive(Debug, Clone)]
pub(super) struct Auth {
    /// The CSRF token to put in this page's forms.
    pub(crate) csrf: String,
}

/// The session key and the API token.
#[derive(Clone)]
pub(crate) struct Sessions {
    key: Arc<[u8; 32]>,
    token: ApiToken,
    secure: bool,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// A fresh key for `token`; `secure` marks cookies `Secure`.
    pub(crate) fn new(token: ApiToken, secure: bool) -> Sessions {
        Sessions {
            key: Arc::new(rand::random()),
            token,
            secure,
        }
    }

    fn mac(&self, what: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key[..]).expect("any key length");
        mac.update(what.as_bytes());
        mac
    }

    /// A new cookie value, valid until `now + ttl`.
    pub(crate) fn issue(&self, now: u64, ttl: Duration) -> String {
        let nonce = hex(&rand::random::<[u8; 16]>());
        let body = format!("{}.{nonce}", now + ttl.as_secs());
        let mac = hex(&self.mac(&body).finalize().into_bytes());
        format!("{body}.{mac}")
    }

    /// The nonce of a cookie value when it is authentic and not expired at `now`.
    pub(crate) fn verify<'a>(&self, value: &'a str, now: u64) -> Option<&'a str> {
        let (body, mac) = value.rsplit_once('.')?;
        let (expiry, nonce) = body.split_once('.')?;
        let mac = (0..mac.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(mac.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        self.mac(body).verify_slice(&mac).ok()?;
        (expiry.parse::<u64>().ok()? > now).then_some(nonce)
    }

    /// The CSRF token of a session (by its nonce); `None`: the Bearer token's.
    pub(crate) fn csrf(&self, nonce: Option<&str>) -> String {
        let what = format!("csrf:{}", nonce.unwrap_or("bearer"));
        hex(&self.mac(&what).finalize().into_bytes()[..16])
    }

    /// The `Set-Cookie` value for a session cookie (or, with `None`, one that deletes it).
    fn set_cookie(&self, value: Option<&str>) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        match value {
            Some(v) => format!(
                "{COOKIE_NAME}={v}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                SESSION_TTL.as_secs()
            ),
            None => format!("{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
        }
    }
}

/// The value of the session cookie, if the request has one.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// True when the request's `Origin` (if any) is this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin = origin.to_str().unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    !host.is_empty() && origin_host == host
}

/// A plain-text refusal, with no data.
fn refuse(status: StatusCode, text: &'static str) -> Response {
    let mut r = (status, text).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// Middleware: lets a request through with the Bearer token or a valid session (plus, for
/// a state-changing request on the session, its CSRF token); else a page request is sent to
/// `/login` and anything else gets 401.
pub(super) async fn require_session(
    State(web): State<WebState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let sessions = &web.sessions;
    let by_bearer = bearer(&parts.headers).is_some_and(|t| sessions.token.matches(t));
    let nonce = if by_bearer {
        None
    } else {
        match cookie(&parts.headers).and_then(|c| sessions.verify(c, now_secs())) {
            Some(nonce) => Some(nonce.to_string()),
            None => {
                let wants_page = parts.method == Method::GET
                    && parts
                        .headers
                        .get(ACCEPT)
                        .and_then(|a| a.to_str().ok())
                        .is_some_and(|a| a.contains("text/html"));
                if wants_page {
                    let next = parts
                        .uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_string();
                    let location = format!("/login?next={}", super::form::encode(&next));
                    return (
                        StatusCode::SEE_OTHER,
                        [(LOCATION, location)],
                        "authentication required",
                    )
                        .into_response();
                }
                return refuse(StatusCode::UNAUTHORIZED, "authentication required");
            }
        }
    };
    let csrf = sessions.csrf(nonce.as_deref());
    let changes_state = !matches!(parts.method, Method::GET | Method::HEAD);
    let body = if changes_state && !by_bearer {
        if !same_origin(&parts.headers) {
            return refuse(StatusCode::FORBIDDEN, "cross-site request refused");
        }
        let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
            Ok(b) => b,
            Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        };
        let header = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let is_form = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let field = if is_form {
            parse_form(&bytes)
                .into_iter()
                .find(|(k, _)| k == "csrf")
                .map(|(_, v)| v)
        } else {
            None
        };
        let given = header.or(field).unwrap_or_default();
        if !constant_eq(given.as_bytes(), csrf.as_bytes()) {
            return refuse(StatusCode::FORBIDDEN, "missing or invalid CSRF token");
        }
        Body::from(bytes)
    } else {
        body
    };
    parts.extensions.insert(Auth { csrf });
    next.run(Request::from_parts(parts, body)).await
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /login?next=`: the form.
pub(super) async fn login_page(
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let next = safe_next(q.get("next").map(String::as_str));
    render_page(
        StatusCode::OK,
        "login.html",
        minijinja::context! { next => next, error => None::<String>, title => "Log in" },
    )
}

/// `POST /login` with the form field `token` (and `next`): sets the session cookie and
/// goes on to `next`, or shows the form again with 401.
pub(super) async fn login(
    State(web): State<WebState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&headers) {
        return refuse(StatusCode::FORBIDDEN, "cross-site request refused");
    }
    let fields = parse_form(&body);
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let next = safe_next(get("next"));
    let token = get("token").unwrap_or("");
    if token.trim().is_empty() || !web.sessions.token.matches(token) {
        return render_page(
            StatusCode::UNAUTHORIZED,
            "login.html",
            minijinja::context! { next => next, error => "That token is not this daemon's API token.", title => "Log in" },
        );
    }
    let value = web.sessions.issue(now_secs(), SESSION_TTL);
    let mut response = (StatusCode::SEE_OTHER, [(LOCATION, next)]).into_response();
    if let Ok(v) = HeaderValue::from_str(&web.sessions.set_cookie(Some(&value))) {
        response.headers_mut().insert(SET_COOKIE, v);
    }
    response
}

/// `POST /logout`: deletes the cookie.
pub(super) async fn logout(State(web): State<WebState>) -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(LOCATION, "/login")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&web.sessions.set_cookie(None)) {
        response.headers_mut().insert(SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        Sessions::new(ApiToken::new("t").expect("token"), false)
    }

    #[test]
    fn cookies_are_signed_and_expire() {
        let s = sessions();
        let value = s.issue(1000, Duration::from_secs(60));
        let nonce = s.verify(&value, 1000).expect("valid");
        assert!(s.verify(&value, 1060).is_none(), "expired");
        let (body, mac) = value.rsplit_once('.').expect("dots");
        let forged = format!("9999999999{}.{mac}", &body[4..]);
        assert!(s.verify(&forged, 1000).is_none(), "changed expiry");
        assert!(s.verify("1.2.3", 0).is_none());
        assert!(s.verify("garbage", 0).is_none());
        // Another daemon's key does not accept it.
        assert!(sessions().verify(&value, 1000).is_none());
        assert_ne!(s.csrf(Some(nonce)), s.csrf(None));
        assert_eq!(s.csrf(Some(nonce)).len(), 32);
    }

    #[test]
    fn the_cookie_is_http_only_and_strict() {
        let c = sessions().set_cookie(Some("v"));
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict"),
            "{c}"
        );
        let c = Sessions::new(ApiToken::new("t").expect("token"), true).set_cookie(Some("v"));
        assert!(c.contains("; Secure"), "{c}");
    }
}
