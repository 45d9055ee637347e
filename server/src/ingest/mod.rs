//! MQTT ingest: a shared subscription to every device's readings topics (so N replicas split the
//! load), each batch handed to [`App::ingest`], and the ack published only after it returns,
//! i.e. after the commit. The event loop is always polled; batches queue to a few workers.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use crate::app::App;
use crate::app::telemetry::{Ack, ReadingsMessage, ack_json, ack_message};

/// The default shared-subscription group every replica joins.
pub const SHARE_GROUP: &str = "vaxtrace";

/// Batch workers by default: enough to keep a database busy while others wait on the broker.
pub const WORKERS: usize = 4;

/// Where the broker is and who we are on it.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id (unique per replica).
    pub client_id: String,
    /// Username, if the broker wants one.
    pub username: Option<String>,
    /// Password (never logged).
    pub password: Option<String>,
    /// Concurrent batch workers.
    pub workers: usize,
    /// Shared-subscription group: replicas of one deployment share one (default `vaxtrace`).
    pub share_group: String,
    /// TLS to the broker (`mqtts://`): whom to trust.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl IngestConfig {
    /// Parses `mqtt://host[:port]` (plain, port 1883) or `mqtts://host[:port]` (TLS, port 8883,
    /// trusting the system's roots until [`IngestConfig::trust_ca_file`] names a CA).
    pub fn from_url(url: &str, client_id: String) -> Result<Self, String> {
        let (rest, tls, default_port) = match (url.strip_prefix("mqtt://"), url.strip_prefix("mqtts://")) {
            (Some(r), _) => (r, false, 1883),
            (_, Some(r)) => (r, true, 8883),
            _ => return Err(format!("unsupported MQTT URL {url:?}: use mqtt://host:port or mqtts://host:port")),
        };
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => {
                (h.to_owned(), p.trim_end_matches('/').parse().map_err(|_| format!("bad port in {url:?}"))?)
            }
            None => (hostport.trim_end_matches('/').to_owned(), default_port),
        };
        let (username, password) = match auth.map(|a| a.split_once(':').unwrap_or((a, ""))) {
            Some((u, p)) => (Some(u.to_owned()), (!p.is_empty()).then(|| p.to_owned())),
            None => (None, None),
        };
        let tls = if tls { Some(crate::tls::client_config(None)?) } else { None };
        Ok(IngestConfig {
            host,
            port,
            client_id,
            username,
            password,
            workers: WORKERS,
            share_group: SHARE_GROUP.to_owned(),
            tls,
        })
    }

    /// Trusts the CA certificates of a PEM file for the broker (a private CA); only for `mqtts://`.
    pub fn trust_ca_file(mut self, ca_file: &std::path::Path) -> Result<Self, String> {
        if self.tls.is_none() {
            return Err("a CA file needs an mqtts:// broker URL".to_owned());
        }
        self.tls = Some(crate::tls::client_config(Some(ca_file))?);
        Ok(self)
    }
}

struct Batch {
    device_id: String,
    kind: Topic,
    payload: bytes::Bytes,
}

/// Where acks go: the broker connection the batches came in on.
#[derive(Clone)]
enum Acks {
    /// A client of an external broker (or of the embedded one over TCP).
    Client(AsyncClient),
    /// The embedded broker's in-process link (none while it is being made again).
    Link(std::sync::Arc<std::sync::Mutex<Option<rumqttd::local::LinkTx>>>),
}

impl Acks {
    /// Queues one ack without waiting (see [`answer`]).
    fn publish(&self, topic: String, body: Vec<u8>) -> Result<(), String> {
        match self {
            Acks::Client(c) => c.try_publish(topic, QoS::AtLeastOnce, false, body).map_err(|e| e.to_string()),
            Acks::Link(tx) => {
                let mut slot = tx.lock().map_err(|_| "the broker link is poisoned".to_owned())?;
                let tx = slot.as_mut().ok_or_else(|| "no link to the embedded broker now".to_owned())?;
                // On a full router queue the ack stays in the link's buffer and goes with the
                // next message the link hands the router; only a closed broker loses it.
                match tx.try_publish(topic, body) {
                    Ok(_) | Err(rumqttd::local::LinkError::TrySend(flume::TrySendError::Full(_))) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }
}

/// The three filters ingest subscribes to, each in its own group: rumqttd keys a shared
/// subscription by its group name alone, so a second filter in the same group would be dropped.
fn filters(share_group: &str) -> impl Iterator<Item = String> + '_ {
    [("", "readings"), ("-json", "readings/json"), ("-dropped", "status/dropped")]
        .into_iter()
        .map(move |(group, suffix)| format!("$share/{share_group}{group}/vaxtrace/v1/devices/+/{suffix}"))
}

/// One queue per worker, a device always on the same one: its batches are handled in arrival
/// order, and workers never wait on each other's device locks.
fn start_workers(app: &App, acks: &Acks, workers: usize) -> Vec<mpsc::Sender<Batch>> {
    (0..workers.max(1))
        .map(|_| {
            let (tx, rx) = mpsc::channel::<Batch>(QUEUE);
            tokio::spawn(worker(app.clone(), acks.clone(), rx));
            tx
        })
        .collect()
}

/// Hands one received message to its device's worker; false once the workers are gone.
async fn dispatch(app: &App, queues: &[mpsc::Sender<Batch>], topic: &str, payload: bytes::Bytes) -> bool {
    let Some((device_id, kind)) = parse_topic(topic) else {
        app.metrics().invalid_batch();
        tracing::warn!(topic = %topic, "message on an unexpected topic");
        return true;
    };
    let batch = Batch { device_id: device_id.to_owned(), kind, payload };
    match queues.get(shard_of(device_id, queues.len())) {
        Some(queue) => queue.send(batch).await.is_ok(),
        None => false,
    }
}

/// What a device published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// A reading batch, protobuf or JSON.
    Readings {
        /// The JSON form (`readings/json`).
        json: bool,
    },
    /// Seqs the device lost for good (`status/dropped`).
    Dropped,
}

/// `vaxtrace/v1/devices/{id}/readings[/json]` or `.../status/dropped` → (id, kind).
pub fn parse_topic(topic: &str) -> Option<(&str, Topic)> {
    let rest = topic.strip_prefix("vaxtrace/v1/devices/")?;
    let (id, tail) = rest.split_once('/')?;
    match tail {
        "readings" => Some((id, Topic::Readings { json: false })),
        "readings/json" => Some((id, Topic::Readings { json: true })),
        "status/dropped" => Some((id, Topic::Dropped)),
        _ => None,
    }
}

/// Runs ingest until the process ends; reconnects with back-off.
pub fn spawn(app: App, cfg: IngestConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut opts = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_inflight(100);
        if let Some(tls) = &cfg.tls {
            opts.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls.clone())));
        }
        if let Some(u) = &cfg.username {
            opts.set_credentials(u.clone(), cfg.password.clone().unwrap_or_default());
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 1000);
        // Acks and PUBACKs are small writes: without TCP_NODELAY one waits for the broker's
        // delayed ACK of the one before (up to ~40 ms), and so does an alert behind it.
        let mut net = eventloop.network_options();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let queues = start_workers(&app, &Acks::Client(client.clone()), cfg.workers);
        let mut backoff = Duration::from_millis(100);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(100);
                    tracing::info!(host = %cfg.host, port = cfg.port, "ingest connected to the MQTT broker");
                    // A clean session forgets subscriptions, so subscribe on every connect.
                    for filter in filters(&cfg.share_group) {
                        if let Err(e) = client.subscribe(filter, QoS::AtLeastOnce).await {
                            tracing::error!(error = %e, "cannot subscribe");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if !dispatch(&app, &queues, &p.topic, p.payload).await {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "MQTT connection lost");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    })
}

/// Runs ingest on an in-process link to the embedded broker until the process ends, linking
/// again whenever the link breaks: rumqttd may drop a live connection when a client that sent
/// DISCONNECT leaves (the router handles its disconnect twice, and the second may hit a newer
/// connection given the same slot). What was delivered to a lost link is re-sent by its devices,
/// which were not acked.
pub fn spawn_embedded(
    app: App,
    broker: std::sync::Arc<crate::broker::Embedded>,
    workers: usize,
    share_group: &str,
) -> tokio::task::JoinHandle<()> {
    let share_group = share_group.to_owned();
    tokio::spawn(async move {
        let acks = std::sync::Arc::new(std::sync::Mutex::new(None));
        let queues = start_workers(&app, &Acks::Link(acks.clone()), workers);
        let mut backoff = Duration::from_millis(100);
        loop {
            let linked = async {
                let crate::broker::Link { mut tx, rx } = broker.link().await.map_err(|e| e.to_string())?;
                filters(&share_group).try_for_each(|f| tx.subscribe(f).map(drop).map_err(|e| e.to_string()))?;
                Ok::<_, String>((tx, rx))
            };
            let mut rx = match linked.await {
                Ok((tx, rx)) => {
                    if let Ok(mut slot) = acks.lock() {
                        *slot = Some(tx);
                    }
                    rx
                }
                Err(e) => {
                    // A first refusal is routine: the broker's readiness probe has just left, and
                    // its second disconnect can take the new link's slot (see above).
                    if backoff >= Duration::from_millis(400) {
                        tracing::warn!(error = %e, retry_in = ?backoff, "cannot link to the embedded MQTT broker");
                    } else {
                        tracing::debug!(error = %e, retry_in = ?backoff, "cannot link to the embedded MQTT broker");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            tracing::info!("ingest linked to the embedded MQTT broker");
            backoff = Duration::from_millis(100);
            let lost = loop {
                match rx.next().await {
                    Ok(Some(rumqttd::Notification::Forward(f))) => {
                        let Ok(topic) = std::str::from_utf8(&f.publish.topic) else {
                            app.metrics().invalid_batch();
                            tracing::warn!("message on a topic that is not UTF-8");
                            continue;
                        };
                        if !dispatch(&app, &queues, topic, f.publish.payload).await {
                            return;
                        }
                    }
                    // The router paused this link when its buffer filled: ask for more, as
                    // rumqttd's own network links do.
                    Ok(Some(rumqttd::Notification::Unschedule)) => {
                        if let Err(e) = rx.wake().await {
                            break e;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => break e,
                }
            };
            tracing::warn!(error = %lost, "the link to the embedded MQTT broker was lost; linking again");
            if let Ok(mut slot) = acks.lock() {
                *slot = None;
            }
            tokio::time::sleep(backoff).await;
        }
    })
}

/// Messages queued per worker.
const QUEUE: usize = 1000;

/// Most messages written in one transaction: enough to share a commit among a busy broker's
/// arrivals, few enough that the statements stay small and the first message's ack is not held
/// back long.
pub const MAX_GROUP: usize = 500;

/// The worker a device's messages go to.
fn shard_of(device_id: &str, workers: usize) -> usize {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    device_id.hash(&mut h);
    usize::try_from(h.finish() % workers.max(1) as u64).unwrap_or(0)
}

/// Takes whatever is queued (up to [`MAX_GROUP`], without waiting for more: under light load a
/// message is handled alone at once), stores every readings batch of it in one transaction, and
/// publishes each message's ack after that commit.
async fn worker(app: App, acks: Acks, mut rx: mpsc::Receiver<Batch>) {
    let mut group: Vec<Batch> = Vec::with_capacity(MAX_GROUP);
    loop {
        let Some(first) = rx.recv().await else { return };
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(b) => group.push(b),
                Err(_) => break,
            }
        }
        let readings: Vec<(usize, ReadingsMessage<'_>)> = group
            .iter()
            .enumerate()
            .filter_map(|(i, b)| match b.kind {
                Topic::Readings { json } => {
                    Some((i, ReadingsMessage { device_id: &b.device_id, payload: &b.payload, json }))
                }
                Topic::Dropped => None,
            })
            .collect();
        let msgs: Vec<ReadingsMessage<'_>> = readings.iter().map(|(_, m)| *m).collect();
        let started = std::time::Instant::now();
        let outcomes = app.ingest_many(&msgs).await;
        // Group sizes and durations are what to look at when ingest is slower than the broker.
        tracing::debug!(
            messages = msgs.len(),
            took_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "ingest group"
        );
        for ((i, _), outcome) in readings.iter().zip(outcomes) {
            if let Some(b) = group.get(*i) {
                answer(&app, &acks, b, outcome);
            }
        }
        // Rare: a device's notice of seqs lost for good, each in its own transaction.
        for b in group.iter().filter(|b| b.kind == Topic::Dropped) {
            let outcome = app.record_dropped(&b.device_id, &b.payload).await;
            answer(&app, &acks, b, outcome);
        }
        group.clear();
    }
}

/// Publishes the ack of one message (called only after its transaction committed).
fn answer(app: &App, acks: &Acks, batch: &Batch, outcome: crate::error::Result<Ack>) {
    let json = batch.kind == Topic::Readings { json: true };
    match outcome {
        Ok(ack) => {
            if ack.error.is_empty() {
                app.metrics().readings(ack.rejected);
            } else {
                app.metrics().invalid_batch();
                tracing::info!(device = %batch.device_id, error = ack.error, "batch refused");
            }
            let (topic, body) = if json {
                (format!("vaxtrace/v1/devices/{}/ack/json", batch.device_id), ack_json(&batch.device_id, &ack))
            } else {
                (format!("vaxtrace/v1/devices/{}/ack", batch.device_id), ack_message(&batch.device_id, &ack))
            };
            // try_publish: a worker must never wait on the client's queue, which only drains while
            // the event loop runs, and the event loop may be waiting on the workers' queue. A lost
            // ack costs a re-send, never a reading.
            if let Err(e) = acks.publish(topic, body) {
                tracing::warn!(error = %e, "cannot publish an ack now; the device will re-send");
            }
        }
        // Nothing was committed or nothing is acked: the device re-sends after its timeout.
        Err(e) => tracing::error!(device = %batch.device_id, error = %e, "batch not stored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_urls() {
        assert_eq!(parse_topic("vaxtrace/v1/devices/abc/readings"), Some(("abc", Topic::Readings { json: false })));
        assert_eq!(parse_topic("vaxtrace/v1/devices/abc/readings/json"), Some(("abc", Topic::Readings { json: true })));
        assert_eq!(parse_topic("vaxtrace/v1/devices/abc/status/dropped"), Some(("abc", Topic::Dropped)));
        assert_eq!(parse_topic("vaxtrace/v1/devices/abc/status"), None);
        assert_eq!(parse_topic("vaxtrace/v1/devices/abc/ack"), None);
        let c = IngestConfig::from_url("mqtt://u:p@broker:1884", "id".into()).ok();
        assert_eq!(
            c.as_ref().map(|c| (c.host.as_str(), c.port, c.username.as_deref())),
            Some(("broker", 1884, Some("u")))
        );
        assert!(IngestConfig::from_url("http://x", "id".into()).is_err());
    }
}
