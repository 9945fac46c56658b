//! The web dashboard, served under `/` beside the API: the runs list (`/`), one run
//! (`/runs/{id}`: header, graph, timeline, live log), the workflows with their trigger forms
//! (`/workflows`), the webhook outbox (`/deliveries`) and the anomalies (`/anomalies`).
//!
//! Pages are rendered on the server (minijinja templates, auto-escaped, with bidi control
//! characters made visible) and read their data through the API's own handlers, so the
//! dashboard shows exactly what the API answers. A little hand-written JavaScript (no build
//! step) keeps pages live through server-sent events and renders step logs windowed. Every
//! asset is embedded in the binary.
//!
//! Authentication ([`session`]): a Bearer token as for the API, or a signed, expiring session
//! cookie set by `POST /login`; state-changing requests made with the cookie must carry the
//! session's CSRF token. Without either, pages redirect to `/login` and everything else
//! answers 401, with no run data.
//!
//! Every answer but the event streams is gzip-compressed when the request's
//! `Accept-Encoding` allows it.

mod assets;
mod form;
mod graph;
mod pages;
mod session;
mod templates;

use axum::Router;
use axum::extract::FromRef;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};

use super::ApiState;
use super::auth::ApiToken;
use session::Sessions;

/// What the dashboard's handlers get.
#[derive(Clone)]
pub(crate) struct WebState {
    /// The API's state: the dashboard calls the API's handlers with it.
    pub(crate) api: ApiState,
    /// Session cookies and CSRF tokens.
    pub(crate) sessions: Sessions,
}

impl FromRef<WebState> for ApiState {
    fn from_ref(web: &WebState) -> ApiState {
        web.api.clone()
    }
}

/// The dashboard's routes: `/login` and the assets open, everything else behind a session
/// or the Bearer token.
pub(crate) fn router(api: ApiState, token: ApiToken) -> Router {
    let secure = api
        .handle
        .shared
        .config
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    let web = WebState {
        api,
        sessions: Sessions::new(token, secure),
    };
    let open = Router::new()
        .route("/login", get(session::login_page).post(session::login))
        .route("/assets/{file}", get(assets::serve))
        .with_state(web.clone());
    let protected = Router::new()
        .route("/", get(pages::runs))
        .route("/events/runs", get(pages::runs_events))
        .route("/runs/{id}", get(pages::run))
        .route("/runs/{id}/events", get(pages::run_events))
        .route("/runs/{id}/steps/{step}/log", get(pages::step_log))
        .route("/runs/{id}/cancel", post(pages::cancel))
        .route("/runs/{id}/retry", post(pages::retry))
        .route("/runs/{id}/rerun", post(pages::rerun))
        .route("/workflows", get(pages::workflows))
        .route("/workflows/{repo}/{name}/runs", post(pages::trigger))
        .route("/deliveries", get(pages::deliveries))
        .route("/anomalies", get(pages::anomalies))
        .route("/logout", post(session::logout))
        .with_state(web.clone())
        .layer(axum::middleware::from_fn_with_state(
            web,
            session::require_session,
        ));
    // Pages, fragments and assets go out compressed when the client accepts gzip (event
    // streams and small answers are left as they are).
    open.merge(protected)
        .layer(axum::middleware::map_response(security_headers))
        .layer(tower_http::compression::CompressionLayer::new())
}

/// The Content-Security-Policy of every dashboard answer: scripts, styles and connections
/// from this origin only (no inline script or style), no framing.
pub(super) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// Adds the security headers, and `no-store` to everything but the (versioned) assets.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
