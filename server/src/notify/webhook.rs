//! The webhook delivery worker. Each round it routes new alert events to the webhooks they match
//! (the store's fan-out), claims the oldest due delivery of each webhook, and POSTs it signed; a
//! failure is rescheduled with back-off, so a webhook's later events wait behind it. The database
//! holds all state, so deliveries survive restarts and any replica may send any of them.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use rand::Rng as _;
use tokio::task::JoinSet;

use crate::app::App;
use crate::domain::alert::AlertEvent;
use crate::domain::webhook::{Delivery, Outcome, signature};
use crate::error::{Error, Result};

/// Deliveries in flight at once, across webhooks (one per webhook at most).
const MAX_IN_FLIGHT: usize = 32;
/// Events routed per fan-out transaction.
const FAN_OUT_BATCH: i64 = 500;

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

impl App {
    /// Starts the webhook delivery worker; it ends when the server shuts down (a delivery cut
    /// short then is sent again once its lease expires).
    pub fn spawn_webhooks(&self) -> tokio::task::JoinHandle<()> {
        let app = self.clone();
        tokio::spawn(async move {
            match http_client(app.webhook_settings().allow_http, app.webhook_settings().timeout) {
                Ok(client) => run(app, client).await,
                Err(e) => tracing::error!(error = %e, "webhook delivery disabled: cannot set up the HTTP client"),
            }
        })
    }
}

async fn run(app: App, client: HttpClient) {
    let settings = app.webhook_settings().clone();
    let mut wake = app.event_wakeups();
    let mut closing = app.closing_signal();
    let mut in_flight: JoinSet<Option<DateTime<Utc>>> = JoinSet::new();
    // The earliest retry this process scheduled: no need to wait a whole poll for it.
    let mut next_retry: Option<DateTime<Utc>> = None;
    loop {
        if *closing.borrow_and_update() {
            break;
        }
        fan_out(&app).await;
        let now = crate::domain::now();
        if next_retry.is_some_and(|t| t <= now) {
            next_retry = None;
        }
        let room = MAX_IN_FLIGHT.saturating_sub(in_flight.len());
        if room > 0 {
            let lease = now + chrono::Duration::from_std(settings.lease).unwrap_or(chrono::Duration::minutes(1));
            match app.store().claim_deliveries(now, lease, i64::try_from(room).unwrap_or(1)).await {
                Ok(claimed) => {
                    for d in claimed {
                        in_flight.spawn(deliver(app.clone(), client.clone(), d));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot claim webhook deliveries"),
            }
        }
        let mut wait = settings.poll;
        if let Some(t) = next_retry {
            wait = wait.min((t - crate::domain::now()).to_std().unwrap_or(Duration::ZERO));
        }
        tokio::select! {
            _ = wake.changed() => {}
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                if let Ok(Some(at)) = done {
                    next_retry = Some(next_retry.map_or(at, |t| t.min(at)));
                }
            }
            () = tokio::time::sleep(wait) => {}
            _ = closing.changed() => {}
        }
    }
    in_flight.shutdown().await;
}

/// Routes every event written since the last round (other replicas' too).
async fn fan_out(app: &App) {
    loop {
        match app.store().fan_out_events(FAN_OUT_BATCH, crate::domain::now()).await {
            Ok(n) if usize::try_from(FAN_OUT_BATCH).is_ok_and(|full| n >= full) => continue,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot route alert events to webhooks");
                return;
            }
        }
    }
}

/// Sends one claimed delivery and records the outcome; returns the retry time when rescheduled.
async fn deliver(app: App, client: HttpClient, d: Delivery) -> Option<DateTime<Utc>> {
    let settings = app.webhook_settings();
    let result = match &d.event {
        Some(event) => attempt(&client, &d, event, settings.timeout).await,
        None => Err("the event is past its retention".to_owned()),
    };
    let now = crate::domain::now();
    let outcome = match result {
        Ok(()) => Outcome::Delivered,
        Err(error) if d.event.is_none() => Outcome::Dropped { error },
        Err(error) => {
            let failures = u32::try_from(d.attempts).unwrap_or(0).saturating_add(1);
            let first = d.first_failure_at.unwrap_or(now);
            let jitter = rand::rng().random_range(-1.0..=1.0);
            match settings.retry.next_attempt(failures, first, now, jitter) {
                Some(at) => Outcome::Retry { at, error },
                None => Outcome::Dropped { error },
            }
        }
    };
    // If this fails the lease runs out and the delivery goes out again: at least once.
    if let Err(e) = app.store().finish_delivery(&d.webhook_id, d.event_id, &outcome, now).await {
        tracing::warn!(webhook = %d.webhook_id, event_id = d.event_id, error = %e, "cannot record a webhook attempt");
    }
    let metrics = app.metrics();
    match &outcome {
        Outcome::Delivered => metrics.webhook_delivered(),
        Outcome::Retry { at, error } => {
            metrics.webhook_attempt_failed();
            tracing::info!(webhook = %d.webhook_id, event_id = d.event_id, %error, retry_at = %at, "webhook delivery failed");
        }
        Outcome::Dropped { error } => {
            if d.event.is_some() {
                metrics.webhook_attempt_failed();
            }
            metrics.webhook_dropped();
            tracing::warn!(webhook = %d.webhook_id, event_id = d.event_id, %error, "webhook delivery dropped");
        }
    }
    match outcome {
        Outcome::Retry { at, .. } => Some(at),
        _ => None,
    }
}

/// One POST; `Err` describes the failure for the webhook's `last_error`.
async fn attempt(
    client: &HttpClient,
    d: &Delivery,
    event: &AlertEvent,
    timeout: Duration,
) -> std::result::Result<(), String> {
    let body = crate::grpc::json::alert_event(event.clone()).to_string();
    // Signed per attempt: the timestamp tells the receiver how fresh this copy is.
    let timestamp = Utc::now().timestamp();
    let sig = signature(&d.secret, timestamp, body.as_bytes()).map_err(|e| e.to_string())?;
    let req = http::Request::post(d.url.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, concat!("vaxtrace/", env!("CARGO_PKG_VERSION")))
        .header("x-vaxtrace-event-id", d.event_id)
        .header("x-vaxtrace-timestamp", timestamp)
        .header("x-vaxtrace-signature", sig)
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("invalid request: {e}"))?;
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| describe(&e))?;
    let status = resp.status();
    // Reading the (small) answer lets the connection go back to the pool.
    let _ = tokio::time::timeout(Duration::from_secs(1), Limited::new(resp.into_body(), 64 * 1024).collect()).await;
    if status.is_success() { Ok(()) } else { Err(format!("HTTP {}", status.as_u16())) }
}

/// A short, log-safe description of a client error with its cause.
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = if e.is_connect() { "cannot connect".to_owned() } else { "request failed".to_owned() };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.chars().take(300).collect()
}

/// The HTTP/1 client: https with the system's root certificates (rustls, ring), plus plain http
/// when allowed.
fn http_client(allow_http: bool, timeout: Duration) -> Result<HttpClient> {
    let tls = crate::tls::client_config(None).map_err(Error::Internal)?;
    let tls = (*tls).clone();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout));
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
    let builder = if allow_http { builder.https_or_http() } else { builder.https_only() };
    let connector = builder.enable_http1().wrap_connector(http);
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}
