//! The delivery worker: one task per configured webhook, draining that webhook's outbox
//! queue in order.
//!
//! Each worker takes the oldest pending delivery of its webhook
//! ([`Db::next_pending_delivery`]), waits until it is due and until the webhook's rate
//! limit allows, POSTs it, and records the attempt in the store before looking at the next
//! one. A delivery waiting for a retry holds back the ones queued after it (order is kept per
//! webhook); a slow or dead receiver only holds up its own worker, never runs or other
//! webhooks.
//!
//! Retries ([`decide`]): connection errors, timeouts ([`REQUEST_TIMEOUT`]), 5xx, 408 and 429
//! are retried with exponential backoff and jitter, from `retry.initial_delay` doubling up to
//! `retry.max_delay`; a `Retry-After` answer (seconds or an HTTP date) sets the delay instead.
//! A delivery whose next attempt would fall later than `retry.max_elapsed` after it was
//! queued is given up. Other answers below 200 or from 300 on are permanent failures. After a
//! restart, a retry whose last try got no answer at all is made at once, and its backoff
//! starts again from `initial_delay` (the daemon may have been down longer than the receiver).
//!
//! Headers of every attempt: `Content-Type`, `User-Agent: agent/VERSION`, `X-Agent-Event`,
//! `X-Agent-Delivery` (the delivery id, the same on every retry), the webhook's `headers`,
//! with a `secret` `X-Agent-Timestamp` (Unix seconds) and `X-Agent-Signature-256:
//! sha256=HEX` ([`signature`]), and for `github_status` `Authorization: Bearer $TOKEN` (read
//! from `token_env` at each attempt) and `Accept: application/vnd.github+json`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::format::Rendered;
use crate::bus::Shutdown;
use crate::config::{WebhookConfig, WebhookFormat, WebhookRetry};
use crate::store::{Db, Delivery, DeliveryOutcome, Fence, Store, StoreError};

/// How long one attempt may take (connect, send, answer).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle worker looks at the store without being woken.
pub(crate) const IDLE_POLL: Duration = Duration::from_secs(5);
/// The rate limit of a `slack` webhook that sets none (deliveries per second).
pub(crate) const SLACK_DEFAULT_RATE: f64 = 1.0;
/// Longest receiver answer text kept in an attempt's error.
const ERROR_BODY_CHARS: usize = 200;

/// `sha256=` and the hex HMAC-SHA256, keyed with `secret`, of `timestamp + "." + body`.
pub(crate) fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AttemptResult {
    /// A 2xx answer.
    Delivered(u16),
    /// Worth trying again: a connection error, a timeout, 408, 429 or 5xx.
    Retryable {
        /// The answer's status, if one came.
        status_code: Option<u16>,
        /// What went wrong.
        error: String,
        /// The receiver's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// Not worth trying again: another status, or a request that cannot be made.
    Permanent {
        /// The answer's status, if one came.
        status_code: Option<u16>,
        /// What went wrong.
        error: String,
    },
}

/// The backoff delay before attempt `attempt + 1` after `attempt` failed tries (from 1):
/// `initial_delay * 2^(attempt-1)` capped at `max_delay`, then a random point in its upper
/// half (jitter, so receivers coming back are not hit by every sender at once).
pub(crate) fn backoff(retry: &WebhookRetry, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let base = retry
        .initial_delay
        .saturating_mul(1u32 << exp)
        .min(retry.max_delay);
    let half = base / 2;
    let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    let extra = if jitter_ms == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
    };
    (base - half) + extra
}

/// What to record for a delivery after an attempt at `now`, the backoff counted from the
/// delivery's recorded attempts (the tests' view of [`decide_with_backoff`]).
#[cfg(test)]
fn decide(
    delivery: &Delivery,
    retry: &WebhookRetry,
    result: AttemptResult,
    now: DateTime<Utc>,
) -> DeliveryOutcome {
    decide_with_backoff(delivery, retry, result, now, delivery.attempts + 1)
}

/// What to record for a delivery after an attempt at `now`, the backoff taken for the
/// `backoff_attempt`-th failed try (the worker counts
/// the tries since the daemon started, so a restart begins again at `initial_delay`).
pub(crate) fn decide_with_backoff(
    delivery: &Delivery,
    retry: &WebhookRetry,
    result: AttemptResult,
    now: DateTime<Utc>,
    backoff_attempt: u32,
) -> DeliveryOutcome {
    match result {
        AttemptResult::Delivered(status_code) => DeliveryOutcome::Delivered { status_code },
        AttemptResult::Permanent { status_code, error } => {
            DeliveryOutcome::GaveUp { status_code, error }
        }
        AttemptResult::Retryable {
            status_code,
            error,
            retry_after,
        } => {
            let attempt = delivery.attempts + 1;
            let delay = retry_after.unwrap_or_else(|| backoff(retry, backoff_attempt.max(1)));
            let later = |t: DateTime<Utc>, d: Duration| {
                chrono::Duration::from_std(d)
                    .ok()
                    .and_then(|d| t.checked_add_signed(d))
            };
            // No time (a `Retry-After` beyond the calendar) is too late; no limit (a
            // `max_elapsed` beyond it) is none.
            let next = later(now, delay);
            let limit = later(delivery.created_at, retry.max_elapsed);
            match next {
                Some(next) if limit.is_none_or(|limit| next <= limit) => DeliveryOutcome::Retry {
                    status_code,
                    error,
                    next_attempt_at: next,
                },
                _ => DeliveryOutcome::GaveUp {
                    status_code,
                    error: format!(
                        "{error} (gave up after {attempt} {})",
                        if attempt == 1 { "attempt" } else { "attempts" }
                    ),
                },
            }
        }
    }
}

/// `Retry-After`: delay-seconds or an HTTP date (past dates mean now).
pub(crate) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// The minimum gap between two attempts of a webhook.
pub(crate) fn min_interval(webhook: &WebhookConfig) -> Option<Duration> {
    let rate = webhook.rate_limit.or(match webhook.format {
        WebhookFormat::Slack => Some(SLACK_DEFAULT_RATE),
        _ => None,
    })?;
    if !(rate > 0.0 && rate.is_finite()) {
        return None;
    }
    Duration::try_from_secs_f64(1.0 / rate).ok()
}

/// Makes one attempt of a delivery.
pub(crate) async fn attempt(
    client: &reqwest::Client,
    webhook: &WebhookConfig,
    delivery: &Delivery,
) -> AttemptResult {
    let permanent = |error: String| AttemptResult::Permanent {
        status_code: None,
        error,
    };
    let Some(rendered) = Rendered::from_envelope(&delivery.body) else {
        return permanent("the stored delivery has no request in it".into());
    };
    let body = rendered.body_bytes();
    // The webhook's own headers first (one may set `Content-Type`); the `X-Agent-*` ones
    // are always ours.
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &webhook.headers {
        let (Ok(n), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(value),
        ) else {
            return permanent(format!(
                "invalid header `{name}` in the webhook's `headers`"
            ));
        };
        headers.insert(n, v);
    }
    if !headers.contains_key(reqwest::header::CONTENT_TYPE) {
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static(rendered.content_type),
        );
    }
    for (name, value) in [
        ("x-agent-event", &delivery.event),
        ("x-agent-delivery", &delivery.id),
    ] {
        let Ok(v) = reqwest::header::HeaderValue::from_str(value) else {
            return permanent(format!("`{value}` cannot be sent as `{name}`"));
        };
        headers.insert(reqwest::header::HeaderName::from_static(name), v);
    }
    let mut request = client.post(&rendered.url).headers(headers);
    if let Some(secret) = &webhook.secret {
        let timestamp = Utc::now().timestamp().to_string();
        let sig = signature(secret.as_bytes(), &timestamp, &body);
        request = request
            .header("X-Agent-Timestamp", timestamp)
            .header("X-Agent-Signature-256", sig);
    }
    if webhook.format == WebhookFormat::GithubStatus {
        let Some(var) = &webhook.token_env else {
            return permanent("`github_status` needs `token_env`".into());
        };
        match std::env::var(var) {
            Ok(token) if !token.is_empty() => {
                request = request
                    .bearer_auth(token)
                    .header(reqwest::header::ACCEPT, "application/vnd.github+json");
            }
            _ => return permanent(format!("environment variable `{var}` is not set")),
        }
    }
    let response = match request.body(body).send().await {
        Ok(r) => r,
        Err(e) => return transport_error(&e),
    };
    let status = response.status();
    let code = status.as_u16();
    if status.is_success() {
        return AttemptResult::Delivered(code);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, Utc::now()));
    let text = tokio::time::timeout(REQUEST_TIMEOUT, response.text())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let text: String = text.trim().chars().take(ERROR_BODY_CHARS).collect();
    let error = if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {text}")
    };
    if code == 429 || code == 408 || status.is_server_error() {
        AttemptResult::Retryable {
            status_code: Some(code),
            error,
            retry_after,
        }
    } else {
        AttemptResult::Permanent {
            status_code: Some(code),
            error,
        }
    }
}

/// A request that got no answer: retried, unless it could not even be built.
fn transport_error(e: &reqwest::Error) -> AttemptResult {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    if e.is_builder() {
        return AttemptResult::Permanent {
            status_code: None,
            error: text,
        };
    }
    let error = if e.is_timeout() {
        format!("timed out after {}s: {text}", REQUEST_TIMEOUT.as_secs())
    } else {
        text
    };
    AttemptResult::Retryable {
        status_code: None,
        error,
        retry_after: None,
    }
}

/// The shared HTTP client of every worker.
pub(crate) fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("agent/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// One webhook's worker.
pub(crate) struct Worker {
    /// The webhook (its `name` keys its deliveries).
    pub(crate) webhook: Arc<WebhookConfig>,
    /// Pinged when a delivery for this webhook was queued.
    pub(crate) wake: Arc<Notify>,
    /// The HTTP client.
    pub(crate) client: reqwest::Client,
    /// The store.
    pub(crate) store: Store,
    /// Resolves when the daemon stops.
    pub(crate) shutdown: Shutdown,
    /// The `outbox` lease's fence while this node holds it: only then does it send.
    pub(crate) fence: tokio::sync::watch::Receiver<Option<Fence>>,
}

/// Runs a store write on the store's writer, its error rendered.
async fn with_store<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    store.write(f).await.map_err(|e| e.to_string())
}

impl Worker {
    /// Delivers this webhook's queue until shutdown.
    pub(crate) async fn run(mut self) {
        let name = self.webhook.name.clone();
        let store = self.store.clone();
        let gap = min_interval(&self.webhook);
        let mut last_attempt: Option<Instant> = None;
        // The head's id and the tries made at it since the daemon started.
        let mut tries: (String, u32) = (String::new(), 0);
        loop {
            if self.shutdown.is_requested() {
                return;
            }
            // Only the holder of the outbox lease sends.
            let Some(fence) = self.fence.borrow_and_update().clone() else {
                tokio::select! {
                    changed = self.fence.changed() => if changed.is_err() { return },
                    () = self.shutdown.requested() => return,
                }
                continue;
            };
            let head = {
                let name = name.clone();
                with_store(&store, move |s| s.next_pending_delivery(&name)).await
            };
            let delivery = match head {
                Ok(Some(d)) => d,
                Ok(None) => {
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(IDLE_POLL) => {}
                        () = self.shutdown.requested() => return,
                    }
                    continue;
                }
                Err(err) => {
                    tracing::warn!(webhook = %name, error = %err, "cannot read the outbox");
                    tokio::select! {
                        () = tokio::time::sleep(IDLE_POLL) => {}
                        () = self.shutdown.requested() => return,
                    }
                    continue;
                }
            };
            if tries.0 != delivery.id {
                tries = (delivery.id.clone(), 0);
            }
            // Wait until it is due (a retry), then until the rate limit allows. A retry whose
            // last try found nobody listening is made at once after a restart (the receiver
            // may have come back meanwhile), then backs off from `initial_delay` again.
            let now = Utc::now();
            let mut ready = Instant::now();
            let retry_now = tries.1 == 0 && delivery.attempts > 0 && {
                let id = delivery.id.clone();
                with_store(&store, move |s| s.last_delivery_attempt(&id))
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|a| a.status_code.is_none())
            };
            if let Some(at) = delivery.next_attempt_at
                && at > now
                && !retry_now
            {
                let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
                ready = ready
                    .checked_add(wait)
                    .unwrap_or_else(|| ready + Duration::from_secs(86_400));
            }
            if let (Some(gap), Some(last)) = (gap, last_attempt) {
                ready = ready.max(last + gap);
            }
            if ready > Instant::now() {
                // A wake means the queue changed (a held run end was released, an earlier
                // event was queued): look at the head again.
                tokio::select! {
                    () = tokio::time::sleep_until(ready) => {}
                    () = self.wake.notified() => continue,
                    () = self.shutdown.requested() => return,
                }
            }
            // Marked as being sent under this node's fence, checked in the same transaction:
            // a node that lost the lease sends nothing more.
            let begun = {
                let (id, fence) = (delivery.id.clone(), fence.clone());
                store
                    .write(move |s| s.begin_delivery_attempt(&id, &fence, Utc::now()))
                    .await
            };
            match begun {
                Ok(None) => {}
                Ok(Some((holder, token))) => {
                    tracing::warn!(webhook = %name, delivery = %delivery.id, %holder, token,
                        "an earlier attempt of this delivery has no recorded outcome (its sender lost the outbox lease or stopped): sending it again with the same delivery id");
                }
                // Delivered or given up meanwhile: look at the head again.
                Err(StoreError::DeliveryNotFound(_)) => continue,
                Err(StoreError::LeaseLost { .. }) => {
                    tracing::info!(webhook = %name, "outbox lease lost: this node stops sending");
                    wait_for_fence_change(&mut self.fence, &self.shutdown).await;
                    continue;
                }
                Err(err) => {
                    tracing::warn!(webhook = %name, error = %err, "cannot mark a delivery as being sent");
                    tokio::select! {
                        () = tokio::time::sleep(IDLE_POLL) => {}
                        () = self.shutdown.requested() => return,
                    }
                    continue;
                }
            }
            let result = tokio::select! {
                r = attempt(&self.client, &self.webhook, &delivery) => r,
                // The attempt is not recorded: it is made again (same id) after the restart.
                () = self.shutdown.requested() => return,
            };
            last_attempt = Some(Instant::now());
            tries.1 += 1;
            let outcome =
                decide_with_backoff(&delivery, &self.webhook.retry, result, Utc::now(), tries.1);
            log_outcome(&name, &delivery, &outcome);
            let id = delivery.id.clone();
            let written = store
                .write(move |s| s.record_delivery_attempt_fenced(&id, &outcome, &fence, Utc::now()))
                .await;
            if let Err(StoreError::LeaseLost { .. }) = written {
                tracing::warn!(webhook = %name, delivery = %delivery.id,
                    "outbox lease lost during the attempt: not recorded; the lease's new holder sends it again with the same delivery id");
                wait_for_fence_change(&mut self.fence, &self.shutdown).await;
                continue;
            }
            if let Err(err) = written {
                tracing::error!(webhook = %name, delivery = %delivery.id, error = %err,
                    "cannot record a delivery attempt");
                tokio::select! {
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    () = self.shutdown.requested() => return,
                }
            }
        }
    }
}

/// Waits until the outbox lease's fence changes (the lease keeper renewed, lost or took it)
/// or shutdown.
async fn wait_for_fence_change(
    fence: &mut tokio::sync::watch::Receiver<Option<Fence>>,
    shutdown: &Shutdown,
) {
    tokio::select! {
        _ = fence.changed() => {}
        () = shutdown.requested() => {}
    }
}

fn log_outcome(webhook: &str, d: &Delivery, outcome: &DeliveryOutcome) {
    let attempt = d.attempts + 1;
    match outcome {
        DeliveryOutcome::Delivered { status_code } => tracing::info!(
            webhook, delivery = %d.id, event = %d.event, attempt, status = status_code,
            "webhook delivered"),
        DeliveryOutcome::Retry {
            error,
            next_attempt_at,
            ..
        } => tracing::warn!(
            webhook, delivery = %d.id, event = %d.event, attempt, %error,
            next = %next_attempt_at, "webhook delivery failed, will retry"),
        DeliveryOutcome::GaveUp { error, .. } => tracing::warn!(
            webhook, delivery = %d.id, event = %d.event, attempt, %error,
            "webhook delivery failed for good"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DeliveryStatus, RunId};

    fn delivery(attempts: u32, created_at: DateTime<Utc>) -> Delivery {
        Delivery {
            id: "d".into(),
            webhook: "h".into(),
            event: "run.failed".into(),
            run_id: Some(RunId(1)),
            body: serde_json::json!({}),
            status: DeliveryStatus::Pending,
            attempts,
            next_attempt_at: None,
            last_error: None,
            created_at,
            history: Vec::new(),
        }
    }

    #[test]
    fn github_documented_hmac_vector() {
        // GitHub's documented HMAC example, with our "timestamp." prefix removed by
        // signing the same bytes: HMAC(secret, "Hello, World!").
        let mut mac = Hmac::<Sha256>::new_from_slice(b"It's a Secret to Everybody").expect("key");
        mac.update(b"Hello, World!");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        // Ours signs "TIMESTAMP.BODY": the same as HMAC over that concatenation.
        let ours = signature(b"It's a Secret to Everybody", "Hello", b" World!");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"It's a Secret to Everybody").expect("key");
        mac.update(b"Hello. World!");
        let expect: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(ours, format!("sha256={expect}"));
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let retry = WebhookRetry {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            max_elapsed: Duration::from_secs(60),
        };
        for _ in 0..50 {
            let d1 = backoff(&retry, 1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = backoff(&retry, 3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d20 = backoff(&retry, 20);
            assert!(d20 >= Duration::from_millis(500) && d20 <= Duration::from_millis(1000));
            assert!(backoff(&retry, u32::MAX) <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn decisions() {
        let retry = WebhookRetry {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_elapsed: Duration::from_secs(10),
        };
        let now = Utc::now();
        let d = delivery(0, now);
        assert_eq!(
            decide(&d, &retry, AttemptResult::Delivered(204), now),
            DeliveryOutcome::Delivered { status_code: 204 }
        );
        let retried = decide(
            &d,
            &retry,
            AttemptResult::Retryable {
                status_code: Some(429),
                error: "HTTP 429".into(),
                retry_after: Some(Duration::from_secs(2)),
            },
            now,
        );
        assert_eq!(
            retried,
            DeliveryOutcome::Retry {
                status_code: Some(429),
                error: "HTTP 429".into(),
                next_attempt_at: now + chrono::Duration::seconds(2),
            }
        );
        // Past max_elapsed since it was queued: given up.
        let old = delivery(5, now - chrono::Duration::seconds(9));
        let gave_up = decide(
            &old,
            &retry,
            AttemptResult::Retryable {
                status_code: Some(503),
                error: "HTTP 503".into(),
                retry_after: Some(Duration::from_secs(5)),
            },
            now,
        );
        assert!(
            matches!(gave_up, DeliveryOutcome::GaveUp { status_code: Some(503), ref error } if error.contains("6 attempts")),
            "{gave_up:?}"
        );
        let permanent = decide(
            &d,
            &retry,
            AttemptResult::Permanent {
                status_code: Some(404),
                error: "HTTP 404".into(),
            },
            now,
        );
        assert!(matches!(
            permanent,
            DeliveryOutcome::GaveUp {
                status_code: Some(404),
                ..
            }
        ));
        // A Retry-After beyond the calendar gives up instead of overflowing.
        let huge = decide(
            &d,
            &retry,
            AttemptResult::Retryable {
                status_code: Some(429),
                error: "HTTP 429".into(),
                retry_after: parse_retry_after("99999999999999999", now),
            },
            now,
        );
        assert!(matches!(huge, DeliveryOutcome::GaveUp { .. }), "{huge:?}");
        // A max_elapsed beyond the calendar is no limit.
        let endless = WebhookRetry {
            max_elapsed: Duration::from_secs(u64::MAX),
            ..retry
        };
        let retried = decide(
            &d,
            &endless,
            AttemptResult::Retryable {
                status_code: None,
                error: "refused".into(),
                retry_after: None,
            },
            now,
        );
        assert!(
            matches!(retried, DeliveryOutcome::Retry { .. }),
            "{retried:?}"
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn rate_limits() {
        let mut w = WebhookConfig {
            name: "h".into(),
            url: "http://x".into(),
            events: Vec::new(),
            workflows: Vec::new(),
            format: WebhookFormat::Slack,
            api: None,
            token_env: None,
            template: None,
            secret: None,
            headers: Default::default(),
            retry: WebhookRetry::default(),
            rate_limit: None,
        };
        assert_eq!(min_interval(&w), Some(Duration::from_secs(1)));
        w.rate_limit = Some(4.0);
        assert_eq!(min_interval(&w), Some(Duration::from_millis(250)));
        w.format = WebhookFormat::Generic;
        w.rate_limit = None;
        assert_eq!(min_interval(&w), None);
    }
}
