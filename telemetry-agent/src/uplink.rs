//! The uplink state machine: what to publish next, when to re-send, when records may be deleted.
//!
//! It is pure logic over the disk [`Buffer`] and a [`Publisher`] (the MQTT client in production, a
//! mock in tests), driven by four inputs: connected, disconnected, the server's ack, a timer tick.
//!
//! * Records leave the buffer only through [`Uplink::on_ack`] (the server's end-to-end ack). A
//!   broker PUBACK means nothing here: brokers drop QoS 1 messages after PUBACK (MQTT-NOTES.md).
//! * At most `max_inflight_batches` batches are awaiting an ack; each holds up to `batch_size`
//!   readings, oldest first. A backlog therefore drains at full speed in full batches, limited only by
//!   the ack round trip, while new readings keep being appended to the buffer behind it.
//! * If the oldest batch in flight has no ack after `ack_timeout`, or the link was re-established,
//!   sending restarts from the first unacked seq (go-back-N). The server ignores repeated seqs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};
use vaxtrace_proto::v1::{ReadingAck, ReadingBatch};

use crate::buffer::{Buffer, BufferError};
use crate::wire::{self, WireError};

/// Hands an encoded batch to the transport.
pub trait Publisher {
    /// Queues one QoS 1 publish of `payload` on the readings topic. `Err` means it was not
    /// accepted (queue full, client gone): nothing was queued and the uplink retries later.
    fn publish(&mut self, payload: Vec<u8>) -> Result<(), PublishRejected>;
}

/// The transport did not accept a publish; the text says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("publish not accepted: {0}")]
pub struct PublishRejected(pub String);

/// Where the uplink stands (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No broker connection: readings only accumulate on disk.
    Disconnected,
    /// Connected and caught up: readings go out as soon as they are stored.
    Normal,
    /// Connected with more than one batch waiting: draining oldest first at full speed.
    Backlog,
}

/// Uplink tuning, from `[uplink]` and the device id.
#[derive(Clone)]
pub struct UplinkSettings {
    /// `ReadingBatch.device_id`.
    pub device_id: String,
    /// Readings per batch, at most.
    pub batch_size: usize,
    /// Batches awaiting an end-to-end ack, at most.
    pub max_inflight_batches: usize,
    /// Re-send what is still unacked after this long.
    pub ack_timeout: Duration,
    /// HMAC key; `None` publishes unsigned batches.
    pub key: Option<Vec<u8>>,
    /// `ReadingBatch.key_version`.
    pub key_version: u32,
}

impl std::fmt::Debug for UplinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkSettings")
            .field("device_id", &self.device_id)
            .field("batch_size", &self.batch_size)
            .field("max_inflight_batches", &self.max_inflight_batches)
            .field("ack_timeout", &self.ack_timeout)
            .field("signed", &self.key.is_some())
            .field("key_version", &self.key_version)
            .finish()
    }
}

/// Errors the caller must act on.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// Reading or acking the buffer failed (a disk problem): retry on the next tick.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// A batch could not be encoded (only an empty HMAC key does that): fix the config.
    #[error(transparent)]
    Wire(#[from] WireError),
}

#[derive(Debug, Clone, Copy)]
struct Flight {
    last: u64,
    sent_at: Instant,
}

/// Counters for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UplinkStats {
    /// Batches handed to the publisher.
    pub batches_sent: u64,
    /// Readings handed to the publisher (re-sends included).
    pub readings_sent: u64,
    /// Go-back-N restarts caused by a missing ack.
    pub ack_timeouts: u64,
}

/// The store-and-forward sender; see the module docs.
#[derive(Debug)]
pub struct Uplink {
    settings: UplinkSettings,
    connected: bool,
    /// Lowest seq not yet sent in the current pass.
    next_send: u64,
    flights: VecDeque<Flight>,
    mode: Mode,
    stats: UplinkStats,
}

impl Uplink {
    /// A disconnected uplink.
    pub fn new(settings: UplinkSettings) -> Self {
        Self {
            settings,
            connected: false,
            next_send: 1,
            flights: VecDeque::new(),
            mode: Mode::Disconnected,
            stats: UplinkStats::default(),
        }
    }

    /// Current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Counters so far.
    pub fn stats(&self) -> UplinkStats {
        self.stats
    }

    /// Batches awaiting an ack.
    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }

    /// The broker connection is up (CONNACK received): re-send everything unacked, because
    /// anything sent before may have been lost with the old connection or broker.
    pub fn on_connected(&mut self, buffer: &Buffer) {
        self.connected = true;
        self.rewind(buffer);
    }

    /// The connection is gone; nothing is sent until [`Uplink::on_connected`].
    pub fn on_disconnected(&mut self) {
        self.connected = false;
        self.flights.clear();
        self.set_mode(Mode::Disconnected, 0);
    }

    /// Applies the server's ack: deletes records up to `acked_seq` and frees the window.
    pub fn on_ack(&mut self, buffer: &mut Buffer, ack: &ReadingAck) -> Result<(), UplinkError> {
        if !ack.device_id.is_empty() && ack.device_id != self.settings.device_id {
            warn!(device_id = %ack.device_id, "ignoring an ack for another device");
            return Ok(());
        }
        if !ack.error.is_empty() {
            match ack.error.as_str() {
                "BAD_SIGNATURE" | "SIGNATURE_REQUIRED" => {
                    error!(error = %ack.error, "server refused our batch: check uplink.key_hex / key_version");
                }
                "DEVICE_NOT_REGISTERED" | "DEVICE_INACTIVE" => {
                    warn!(error = %ack.error, "server does not accept this device; readings are kept");
                }
                _ => warn!(error = %ack.error, acked_seq = ack.acked_seq, "server reported an error for a batch"),
            }
        }
        if ack.rejected_count > 0 {
            warn!(rejected = ack.rejected_count, "server rejected readings for invalid content");
        }
        if ack.acked_seq > buffer.acked_upto() {
            buffer.ack(ack.acked_seq)?;
            debug!(acked_seq = buffer.acked_upto(), unacked = buffer.unacked_count(), "ack");
        }
        let acked = buffer.acked_upto();
        while self.flights.front().is_some_and(|f| f.last <= acked) {
            self.flights.pop_front();
        }
        self.next_send = self.next_send.max(acked + 1);
        Ok(())
    }

    /// Periodic check: if the oldest batch in flight waited `ack_timeout` without an ack,
    /// start again from the first unacked seq. Returns true when it did.
    pub fn on_tick(&mut self, buffer: &Buffer, now: Instant) -> bool {
        let Some(oldest) = self.flights.front() else { return false };
        if now.saturating_duration_since(oldest.sent_at) < self.settings.ack_timeout {
            return false;
        }
        self.stats.ack_timeouts += 1;
        warn!(
            from_seq = buffer.acked_upto() + 1,
            in_flight = self.flights.len(),
            timeout = ?self.settings.ack_timeout,
            "no server ack in time; re-sending unacked readings"
        );
        self.rewind(buffer);
        true
    }

    /// Publishes as many batches as the window allows; returns how many were handed over.
    pub fn pump(
        &mut self,
        buffer: &Buffer,
        publisher: &mut impl Publisher,
        now: Instant,
    ) -> Result<usize, UplinkError> {
        let mut sent = 0;
        while self.connected && self.flights.len() < self.settings.max_inflight_batches {
            let records = buffer.unacked(self.next_send, self.settings.batch_size)?;
            let (Some(&(first, _)), Some(&(last, _))) = (records.first(), records.last()) else { break };
            let mut readings = Vec::with_capacity(records.len());
            for (seq, bytes) in &records {
                match wire::decode_record(*seq, bytes) {
                    Ok(r) => readings.push(r),
                    // The buffer checksums records, so this means a bug or a format change; the
                    // server's ack will stall at this seq, which makes the problem visible.
                    Err(e) => error!(seq, error = %e, "undecodable buffer record; skipping it"),
                }
            }
            if readings.is_empty() {
                self.next_send = last + 1;
                continue;
            }
            let batch = ReadingBatch {
                device_id: self.settings.device_id.clone(),
                readings,
                key_version: self.settings.key_version,
                signature: Vec::new(),
            };
            let payload = wire::encode_signed(&batch, self.settings.key.as_deref())?;
            if let Err(e) = publisher.publish(payload) {
                debug!(error = %e, "publisher busy; will retry");
                break;
            }
            self.flights.push_back(Flight { last, sent_at: now });
            self.next_send = last + 1;
            self.stats.batches_sent += 1;
            self.stats.readings_sent += batch.readings.len() as u64;
            sent += 1;
            debug!(first, last, "batch published");
        }
        if self.connected {
            let waiting = buffer.next_seq().saturating_sub(self.next_send);
            let mode = if waiting > self.settings.batch_size as u64 { Mode::Backlog } else { Mode::Normal };
            self.set_mode(mode, waiting);
        }
        Ok(sent)
    }

    fn rewind(&mut self, buffer: &Buffer) {
        self.flights.clear();
        self.next_send = buffer.acked_upto() + 1;
    }

    fn set_mode(&mut self, mode: Mode, waiting: u64) {
        if mode != self.mode {
            match mode {
                Mode::Backlog => info!(waiting, "uplink: draining backlog oldest first"),
                Mode::Normal => info!("uplink: caught up"),
                Mode::Disconnected => info!("uplink: disconnected; buffering readings on disk"),
            }
            self.mode = mode;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::buffer::BufferConfig;
    use crate::wire::Verified;
    use prost_types::Timestamp;
    use vaxtrace_proto::v1::Reading;

    const KEY: &[u8] = b"test-key-0123456789";

    #[derive(Default)]
    struct MockPublisher {
        sent: Vec<ReadingBatch>,
        refuse: bool,
    }

    impl Publisher for MockPublisher {
        fn publish(&mut self, payload: Vec<u8>) -> Result<(), PublishRejected> {
            if self.refuse {
                return Err(PublishRejected("queue full".into()));
            }
            let Verified::Valid(batch) = wire::verify_signed(&payload, KEY).unwrap() else { panic!("bad signature") };
            self.sent.push(batch);
            Ok(())
        }
    }

    impl MockPublisher {
        fn seqs(&self, i: usize) -> Vec<u64> {
            self.sent[i].readings.iter().map(|r| r.seq).collect()
        }
    }

    fn setup(batch_size: usize, window: usize) -> (tempfile::TempDir, Buffer, Uplink) {
        let dir = tempfile::tempdir().unwrap();
        let buffer = Buffer::open(dir.path(), BufferConfig::default()).unwrap();
        let uplink = Uplink::new(UplinkSettings {
            device_id: "dev-1".into(),
            batch_size,
            max_inflight_batches: window,
            ack_timeout: Duration::from_secs(30),
            key: Some(KEY.to_vec()),
            key_version: 0,
        });
        (dir, buffer, uplink)
    }

    fn append(buffer: &mut Buffer, n: usize) {
        let start = buffer.next_seq();
        let records: Vec<Vec<u8>> = (0..n as u64)
            .map(|i| {
                wire::encode_record(&Reading {
                    time: Some(Timestamp { seconds: 1_700_000_000 + 60 * (start + i) as i64, nanos: 0 }),
                    temp_c: 5.0,
                    ..Default::default()
                })
            })
            .collect();
        buffer.append_batch(records).unwrap();
    }

    fn ack(upto: u64) -> ReadingAck {
        ReadingAck { device_id: "dev-1".into(), acked_seq: upto, ..Default::default() }
    }

    #[test]
    fn published_batches_stay_on_disk_until_the_server_acks_them() {
        let (_d, mut buffer, mut uplink) = setup(60, 4);
        let mut publisher = MockPublisher::default();
        append(&mut buffer, 10);
        let t0 = Instant::now();
        uplink.on_connected(&buffer);
        assert_eq!(uplink.pump(&buffer, &mut publisher, t0).unwrap(), 1);
        assert_eq!(publisher.seqs(0), (1..=10).collect::<Vec<_>>());
        // The publisher accepted the batch (the broker's PUBACK in production): nothing is deleted.
        assert_eq!(buffer.unacked_count(), 10);
        uplink.on_ack(&mut buffer, &ack(4)).unwrap();
        assert_eq!((buffer.acked_upto(), buffer.unacked_count()), (4, 6));
        uplink.on_ack(&mut buffer, &ack(10)).unwrap();
        assert!(buffer.is_empty());
        assert_eq!(uplink.in_flight(), 0);
    }

    #[test]
    fn unacked_readings_are_resent_after_the_timeout_on_a_healthy_link() {
        let (_d, mut buffer, mut uplink) = setup(60, 4);
        let mut publisher = MockPublisher::default();
        append(&mut buffer, 5);
        let t0 = Instant::now();
        uplink.on_connected(&buffer);
        uplink.pump(&buffer, &mut publisher, t0).unwrap();
        uplink.on_ack(&mut buffer, &ack(2)).unwrap();
        // Nothing new to send, and the ack covers only part of the batch: wait.
        assert_eq!(uplink.pump(&buffer, &mut publisher, t0).unwrap(), 0);
        assert!(!uplink.on_tick(&buffer, t0 + Duration::from_millis(29_999)));
        assert!(uplink.on_tick(&buffer, t0 + Duration::from_secs(30)));
        assert_eq!(uplink.pump(&buffer, &mut publisher, t0 + Duration::from_secs(30)).unwrap(), 1);
        assert_eq!(publisher.seqs(1), vec![3, 4, 5]);
        assert_eq!(uplink.stats().ack_timeouts, 1);
        assert_eq!(uplink.mode(), Mode::Normal);
    }

    #[test]
    fn backlog_drains_oldest_first_in_full_batches_while_new_readings_queue_behind() {
        let (_d, mut buffer, mut uplink) = setup(10, 3);
        let mut publisher = MockPublisher::default();
        let t0 = Instant::now();
        append(&mut buffer, 95);
        assert_eq!(uplink.pump(&buffer, &mut publisher, t0).unwrap(), 0, "nothing is sent while disconnected");
        assert_eq!(uplink.mode(), Mode::Disconnected);
        uplink.on_connected(&buffer);
        assert_eq!(uplink.pump(&buffer, &mut publisher, t0).unwrap(), 3, "the window limits batches in flight");
        assert_eq!(uplink.mode(), Mode::Backlog);
        let mut acked = 0;
        while acked < buffer.next_seq() - 1 {
            // Sensing continues during the drain: appends never wait for the uplink.
            if buffer.next_seq() <= 100 {
                append(&mut buffer, 1);
            }
            let last = publisher.sent.last().unwrap().readings.last().unwrap().seq;
            acked = last.min(acked + 10);
            uplink.on_ack(&mut buffer, &ack(acked)).unwrap();
            uplink.pump(&buffer, &mut publisher, t0).unwrap();
        }
        let all: Vec<u64> = publisher.sent.iter().flat_map(|b| b.readings.iter().map(|r| r.seq)).collect();
        assert_eq!(all, (1..=100).collect::<Vec<_>>(), "each reading once, oldest first");
        assert!(publisher.sent[..9].iter().all(|b| b.readings.len() == 10), "backlog goes out in full batches");
        assert_eq!(uplink.mode(), Mode::Normal);
        assert!(buffer.is_empty());
    }

    #[test]
    fn reconnect_resends_from_the_first_unacked_seq_and_refusals_keep_the_position() {
        let (_d, mut buffer, mut uplink) = setup(4, 2);
        let mut publisher = MockPublisher::default();
        let t0 = Instant::now();
        append(&mut buffer, 8);
        uplink.on_connected(&buffer);
        uplink.pump(&buffer, &mut publisher, t0).unwrap();
        uplink.on_ack(&mut buffer, &ack(4)).unwrap();
        uplink.on_disconnected();
        publisher.refuse = true;
        uplink.on_connected(&buffer);
        assert_eq!(uplink.pump(&buffer, &mut publisher, t0).unwrap(), 0);
        publisher.refuse = false;
        assert_eq!(uplink.pump(&buffer, &mut publisher, t0).unwrap(), 1);
        assert_eq!(publisher.seqs(2), vec![5, 6, 7, 8], "seq 5..8 went out before the drop and again now");
    }

    #[test]
    fn acks_for_other_devices_are_ignored() {
        let (_d, mut buffer, mut uplink) = setup(4, 2);
        append(&mut buffer, 3);
        let other = ReadingAck { device_id: "dev-2".into(), acked_seq: 3, ..Default::default() };
        uplink.on_ack(&mut buffer, &other).unwrap();
        assert_eq!(buffer.unacked_count(), 3);
    }
}
