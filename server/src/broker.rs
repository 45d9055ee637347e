//! The embedded MQTT broker (rumqttd) used when no external broker is configured. rumqttd cannot
//! report a failed bind or shut down (MQTT-NOTES.md), so the port is checked first and readiness
//! is confirmed with a real MQTT CONNECT.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};

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
}

/// Starts rumqttd on `listen` in a background thread and waits until it accepts clients.
pub async fn start(listen: SocketAddr) -> Result<SocketAddr, BrokerError> {
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
    let config = Config {
        id: 0,
        router: RouterConfig {
            // The default of 0 refuses every client; segments below 1 KiB panic the router; larger
            // segments only cost memory (1 MiB × 10 levels off near 57 MB).
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            max_segment_size: 1 << 20,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("v4".to_owned(), server)])),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            // Blocks while the broker runs; it has no shutdown call and ends with the process.
            if let Err(e) = rumqttd::Broker::new(config).start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|_| BrokerError::NotReady(listen))?;
    let probe_host = if listen.ip().is_unspecified() { "127.0.0.1".to_owned() } else { listen.ip().to_string() };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if connects(&probe_host, listen.port()).await {
            return Ok(listen);
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
