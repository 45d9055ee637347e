//! The rumqttc connection: options, TLS, and the always-polled event loop behind a channel.
//!
//! Following thin-edge.io's `mqtt_channel`, one task owns the `EventLoop` and polls it forever,
//! turning what matters into [`LinkEvent`]s; errors back off with jittered exponential delays
//! and polling resumes (rumqttc reconnects on the next poll). Publishing never awaits: the core
//! uses `try_publish`, so a dead link can never stall sensing.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, Transport};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use vaxtrace_proto::v1::ReadingAck;

use crate::config::{Config, ConfigError};
use crate::uplink::{PublishRejected, Publisher};

/// Payload of the status topic while connected (retained).
pub const ONLINE: &str = "online";
/// Payload of the status topic after the agent is gone (retained Last Will).
pub const OFFLINE: &str = "offline";

/// The device's topics (see telemetry.proto).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `vaxtrace/v1/devices/{id}/readings`: protobuf ReadingBatch, QoS 1.
    pub readings: String,
    /// `vaxtrace/v1/devices/{id}/ack`: protobuf ReadingAck from the server.
    pub ack: String,
    /// `vaxtrace/v1/devices/{id}/status`: exactly `online` / `offline`, retained.
    pub status: String,
    /// `.../status/alarm`: retained JSON with the local alarm state.
    pub alarm: String,
    /// `.../status/dropped`: JSON notice of seqs the agent lost and will never send.
    pub dropped: String,
}

impl Topics {
    /// Topics of `device_id`.
    pub fn new(device_id: &str) -> Self {
        let base = format!("vaxtrace/v1/devices/{device_id}");
        Self {
            readings: format!("{base}/readings"),
            ack: format!("{base}/ack"),
            status: format!("{base}/status"),
            alarm: format!("{base}/status/alarm"),
            dropped: format!("{base}/status/dropped"),
        }
    }
}

/// What the event loop reports to the agent core.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    /// CONNACK received; `online` was published and the ack topic (re)subscribed.
    Connected,
    /// The connection failed or dropped; the loop is backing off.
    Disconnected,
    /// A decoded ReadingAck from the server.
    Ack(ReadingAck),
}

/// Builds rumqttc options from the config: persistent session, Last Will, credentials, TLS.
pub fn mqtt_options(config: &Config) -> Result<MqttOptions, ConfigError> {
    let endpoint = config.mqtt_endpoint()?;
    let topics = Topics::new(&config.device_id);
    let mut opts = MqttOptions::new(config.device_id.clone(), endpoint.host.clone(), endpoint.port);
    // A persistent session keeps our ack subscription (and acks sent while we were away) at the broker.
    opts.set_clean_session(false);
    opts.set_keep_alive(config.mqtt.keep_alive.0);
    opts.set_last_will(LastWill::new(&topics.status, OFFLINE, QoS::AtLeastOnce, true));
    // Small windows keep memory flat: rumqttc allocates its inflight table up front.
    opts.set_inflight(config.uplink.max_inflight_batches.clamp(1, 100) as u16 + 4);
    opts.set_request_channel_capacity(config.uplink.max_inflight_batches + 8);
    // Batches are ≤ 1000 readings of ~25 bytes; acks are tiny.
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let username = config.mqtt.username.clone().unwrap_or_else(|| config.device_id.clone());
    if let Some(password) = config.mqtt_password()? {
        opts.set_credentials(username, password.0);
    } else if config.mqtt.username.is_some() {
        opts.set_credentials(username, String::new());
    }
    if endpoint.tls {
        opts.set_transport(tls_transport(config)?);
    }
    Ok(opts)
}

fn tls_transport(config: &Config) -> Result<Transport, ConfigError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let invalid = |m: String| ConfigError::Invalid(m);
    let ca = config.mqtt.ca_file.as_ref().ok_or_else(|| invalid("TLS needs mqtt.ca_file".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(ca).map_err(|e| invalid(format!("mqtt.ca_file {}: {e}", ca.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| invalid(format!("mqtt.ca_file {}: {e}", ca.display())))?;
        roots.add(cert).map_err(|e| invalid(format!("mqtt.ca_file {}: {e}", ca.display())))?;
    }
    if roots.is_empty() {
        return Err(invalid(format!("mqtt.ca_file {} holds no certificate", ca.display())));
    }
    // ring, explicitly: no process-wide default provider, and no OpenSSL anywhere.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(tls))))
}

/// Reconnect delays: doubling from `min` to `max`, each multiplied by a random 0.5..1.5 so a
/// fleet that lost the broker together does not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    rng: u64,
}

impl Backoff {
    /// A back-off starting at `min`.
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        // Mixed first: xorshift's early outputs from a small seed are all near zero.
        Self { min, max, current: min, rng: crate::sensor::splitmix64(seed) | 1 }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: jitter needs no cryptographic quality, and avoids a dependency.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let factor = 0.5 + (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        let delay = self.current.mul_f64(factor).min(self.max);
        self.current = (self.current * 2).min(self.max);
        delay
    }

    /// Back to `min` after a successful connection.
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

/// The client side of the link: publishes without ever waiting.
#[derive(Debug, Clone)]
pub struct Link {
    client: AsyncClient,
    topics: Topics,
}

impl Link {
    /// Creates the client and spawns the event-loop task on the current runtime.
    pub fn start(
        config: &Config,
        events: mpsc::Sender<LinkEvent>,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), ConfigError> {
        let opts = mqtt_options(config)?;
        let cap = opts.request_channel_capacity();
        let (client, mut eventloop) = AsyncClient::new(opts, cap);
        // A small publish must not wait for the broker's delayed ACK of the previous one
        // (Nagle): that costs up to ~40 ms a reading at low rates.
        let mut net = eventloop.network_options();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let topics = Topics::new(&config.device_id);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id());
        let backoff = Backoff::new(config.mqtt.reconnect_min.0, config.mqtt.reconnect_max.0, seed);
        let endpoint = config.mqtt_endpoint()?;
        info!(host = %endpoint.host, port = endpoint.port, tls = endpoint.tls, "connecting to the broker");
        let task = tokio::spawn(poll_forever(eventloop, client.clone(), topics.clone(), events, backoff));
        Ok((Self { client, topics }, task))
    }

    /// The device's topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Queues a QoS 1 publish without waiting; fails when the request queue is full.
    pub fn try_publish(&self, topic: &str, retain: bool, payload: Vec<u8>) -> Result<(), PublishRejected> {
        self.client.try_publish(topic, QoS::AtLeastOnce, retain, payload).map_err(|e| PublishRejected(e.to_string()))
    }

    /// Publishes `offline` (a clean DISCONNECT suppresses the Last Will) and disconnects.
    pub fn shutdown(&self) {
        let _ = self.try_publish(&self.topics.status, true, OFFLINE.as_bytes().to_vec());
        let _ = self.client.try_disconnect();
    }
}

/// Publishes reading batches on the readings topic.
#[derive(Debug)]
pub struct BatchPublisher<'a>(pub &'a Link);

impl Publisher for BatchPublisher<'_> {
    fn publish(&mut self, payload: Vec<u8>) -> Result<(), PublishRejected> {
        self.0.try_publish(&self.0.topics.readings, false, payload)
    }
}

async fn poll_forever(
    mut eventloop: EventLoop,
    client: AsyncClient,
    topics: Topics,
    events: mpsc::Sender<LinkEvent>,
    mut backoff: Backoff,
) {
    let mut connected = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                info!(session_present = ack.session_present, "connected to the broker");
                backoff.reset();
                connected = true;
                // Subscribing again is harmless with a kept session and needed when the broker lost it.
                if let Err(e) = client.try_subscribe(&topics.ack, QoS::AtLeastOnce) {
                    warn!(error = %e, "cannot queue the ack subscription");
                }
                if let Err(e) = client.try_publish(&topics.status, QoS::AtLeastOnce, true, ONLINE) {
                    warn!(error = %e, "cannot queue the online status");
                }
                if events.send(LinkEvent::Connected).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topics.ack => match ReadingAck::decode(p.payload) {
                Ok(ack) => {
                    if events.send(LinkEvent::Ack(ack)).await.is_err() {
                        return;
                    }
                }
                Err(e) => warn!(error = %e, "undecodable ack ignored"),
            },
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                debug!("disconnect sent; event loop ends");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                if connected {
                    connected = false;
                    if events.send(LinkEvent::Disconnected).await.is_err() {
                        return;
                    }
                }
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in = ?delay, "broker connection failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8), 42);
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(500) && delays[0] <= Duration::from_millis(1500));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(8)));
        assert!(delays[7] >= Duration::from_secs(4), "{delays:?}");
        let mut other = Backoff::new(Duration::from_secs(1), Duration::from_secs(8), 43);
        assert_ne!(delays[0], other.next_delay(), "different seeds jitter differently");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(1500));
    }

    #[test]
    fn topics_follow_the_contract() {
        let t = Topics::new("dev-9");
        assert_eq!(t.readings, "vaxtrace/v1/devices/dev-9/readings");
        assert_eq!(t.ack, "vaxtrace/v1/devices/dev-9/ack");
        assert_eq!(t.status, "vaxtrace/v1/devices/dev-9/status");
        assert_eq!(t.alarm, "vaxtrace/v1/devices/dev-9/status/alarm");
    }
}
