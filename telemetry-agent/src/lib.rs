//! vaxtrace telemetry agent: reads fridge probes, keeps every reading in a crash-safe disk buffer,
//! publishes signed batches over MQTT and deletes readings only after the server's end-to-end ack.
//!
//! Modules, bottom up: [`buffer`] (disk), [`wire`] (payloads and signatures), [`sensor`] (sources),
//! [`alarm`] (local alarm), [`uplink`] (the send/ack state machine), [`mqtt`] (rumqttc), [`agent`]
//! (wires them together), [`config`] (the TOML file).

pub mod agent;
pub mod alarm;
pub mod buffer;
pub mod config;
pub mod mqtt;
pub mod sensor;
pub mod uplink;
pub mod wire;
