//! The embedded MQTT broker (rumqttd) used when no external broker is configured. rumqttd cannot
//! report a failed bind or shut down (MQTT-NOTES.md), so the port is checked first and readiness
//! is confirmed with a real MQTT CONNECT.
//!
//! The server's own ingest reaches the embedded broker through an in-process link, not a socket:
//! rumqttd never sets TCP_NODELAY on the sockets it accepts, so every delivery it wrote to a TCP
//! ingest client could wait up to ~40 ms for the delayed ACK of the one before (the alert
//! latency's tail), and the link also spares each message a socket write, a read and a decode.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use rumqttd::{ConnectionSettings, RouterConfig, ServerSettings};

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Another process holds the port.
    #[error(
        "the MQTT port {0} is taken (is Mosquitto running?); choose another with --mqtt-listen or use it with --mqtt-url: {1}"
    )]
    PortTaken(SocketAddr, std::io::Error),
    /// The broker did not answer a CONNECT in time.
    #[error("the embedded MQTT broker on {0} did not become ready")]
    NotReady(SocketAddr),
    /// The router refused an in-process connection.
    #[error("the embedded MQTT broker refused an in-process link: {0}")]
    Link(String),
}

/// Makes an in-process connection to the router (see [`Embedded::link`]).
type LinkMaker = dyn Fn(&str) -> Result<(rumqttd::local::LinkTx, rumqttd::local::LinkRx), String> + Send + Sync;

/// A running embedded broker.
pub struct Embedded {
    /// Where devices and other clients connect.
    pub addr: SocketAddr,
    links: std::sync::Arc<LinkMaker>,
}

/// An in-process MQTT connection to the embedded broker.
pub struct Link {
    pub(crate) tx: rumqttd::local::LinkTx,
    pub(crate) rx: rumqttd::local::LinkRx,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").finish_non_exhaustive()
    }
}

impl Embedded {
    /// A new in-process connection (for [`crate::ingest::spawn_embedded`]).
    pub async fn link(&self) -> Result<Link, BrokerError> {
        let links = self.links.clone();
        let id = format!("vaxtrace-server-{}", uuid::Uuid::now_v7().simple());
        // The router answers a link's CONNECT on its own thread; the wait is brief but blocking.
        match tokio::task::spawn_blocking(move || links(&id)).await {
            Ok(Ok((tx, rx))) => Ok(Link { tx, rx }),
            Ok(Err(e)) => Err(BrokerError::Link(e)),
            Err(e) => Err(BrokerError::Link(e.to_string())),
        }
    }
}

/// Starts rumqttd on `listen` (its router, and its listener in a background thread) and waits
/// until it accepts clients.
pub async fn start(listen: SocketAddr) -> Result<Embedded, BrokerError> {
    // rumqttd's own bind failure is silent, so find out first.
    drop(std::net::TcpListener::bind(listen).map_err(|e| BrokerError::PortTaken(listen, e))?);
    let server = ServerSettings {
        name: "v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 1 << 20,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let router = RouterConfig {
        // The default of 0 refuses every client; segments below 1 KiB panic the router; larger
        // segments only cost memory (1 MiB × 10 levels off near 57 MB).
        max_connections: 10_000,
        max_outgoing_packet_count: 200,
        max_segment_size: 1 << 20,
        max_segment_count: 10,
        ..Default::default()
    };
    // What `rumqttd::Broker` does for a v4 listener, kept apart so that links can be made while
    // the listener runs (`Broker` makes them only before it starts).
    let router_tx = rumqttd::Router::new(0, router).spawn();
    let mut listener = rumqttd::Server::new(server, router_tx.clone(), rumqttd::protocol::v4::V4);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => return tracing::error!(error = %e, "embedded MQTT broker cannot start"),
            };
            // Runs while the process does: rumqttd has no shutdown call.
            if let Err(e) = runtime.block_on(listener.start(rumqttd::LinkType::Remote)) {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|_| BrokerError::NotReady(listen))?;
    let links: std::sync::Arc<LinkMaker> =
        std::sync::Arc::new(move |id: &str| match rumqttd::local::LinkBuilder::new(id, router_tx.clone()).build() {
            Ok((tx, rx, _)) => Ok((tx, rx)),
            Err(e) => Err(e.to_string()),
        });
    let probe_host = if listen.ip().is_unspecified() { "127.0.0.1".to_owned() } else { listen.ip().to_string() };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if connects(&probe_host, listen.port()).await {
            return Ok(Embedded { addr: listen, links });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(BrokerError::NotReady(listen))
}

/// True when an MQTT CONNECT is answered with a CONNACK.
pub async fn connects(host: &str, port: u16) -> bool {
    let mut opts = MqttOptions::new(format!("vaxtrace-probe-{}", uuid::Uuid::now_v7().simple()), host, port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(opts, 4);
    let ok = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    if ok {
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(100), el.poll()).await;
    }
    ok
}
