//! Telemetry use cases: register and update loggers, ingest their batches, and serve their
//! readings. Ingest answers with the end-to-end ack only after the batch is committed; the
//! transport publishes it.

use prost::Message as _;
use rand::RngCore as _;
use serde::Deserialize;
use vaxtrace_proto::signing::{self, Verified};
use vaxtrace_proto::v1 as pb;

use std::collections::HashMap;
use std::sync::Arc;

use super::App;
use crate::domain::telemetry::{
    self as tm, Bucketing, Device, DeviceFilter, DeviceInput, DevicePatch, Incoming, LatestReading, NewDevice, Probe,
    ReadingBucket, ReadingCursor, ReadingSource, RecordedReading, StoredReading, TimeRange,
};
use crate::domain::{Action, Caller, Idempotency, Page, PageRequest, new_id, now, validate};
use crate::error::{Error, Result, reason};
use crate::store::{DeviceReadings, GroupOutcome};
use chrono::{DateTime, Utc};

/// Most readings accepted in one batch.
pub const MAX_BATCH: usize = 1000;

/// The answer to one batch, for the device's ack topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Every reading of the device with seq ≤ this is committed.
    pub acked_seq: i64,
    /// Readings of this batch refused for their content.
    pub rejected: u32,
    /// Empty on success, else an UPPER_SNAKE error (nothing of the batch was stored).
    pub error: &'static str,
}

impl Ack {
    fn refused(acked_seq: i64, error: &'static str) -> Self {
        Ack { acked_seq, rejected: 0, error }
    }
}

/// The fixed JSON form of a batch (see telemetry.proto).
#[derive(Debug, Deserialize)]
struct JsonBatch<'a> {
    #[serde(borrow)]
    readings: &'a serde_json::value::RawValue,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    key_version: u32,
}

#[derive(Debug, Deserialize)]
struct JsonReading {
    seq: JsonSeq,
    time: String,
    temp_c: Option<f64>,
    #[serde(default)]
    probe: u32,
    power_on: Option<bool>,
    battery_pct: Option<u32>,
    door_open: Option<bool>,
    #[serde(default)]
    sensor_fault: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JsonSeq {
    Number(u64),
    Text(String),
}

/// Checks a JSON message's hex signature over the exact bytes of its signed part: `Ok(true)`
/// when signed and valid, `Ok(false)` when unsigned, `BAD_SIGNATURE` otherwise.
fn verify_json(key: &[u8], signed: &str, hex: Option<&str>) -> std::result::Result<bool, &'static str> {
    let Some(hex) = hex else { return Ok(false) };
    let tag = signing::hmac_sha256(key, signed.as_bytes()).map_err(|_| "BAD_SIGNATURE")?;
    // Constant time: a device's signature must not be guessable byte by byte.
    let same = subtle::ConstantTimeEq::ct_eq(signing::to_hex(&tag).as_bytes(), hex.as_bytes());
    if bool::from(same) { Ok(true) } else { Err("BAD_SIGNATURE") }
}

fn from_json(payload: &[u8], key: &[u8]) -> std::result::Result<(Vec<Incoming>, bool, u32), &'static str> {
    let batch: JsonBatch<'_> = serde_json::from_slice(payload).map_err(|_| "MALFORMED")?;
    let verified = verify_json(key, batch.readings.get(), batch.signature.as_deref())?;
    let readings: Vec<JsonReading> = serde_json::from_str(batch.readings.get()).map_err(|_| "MALFORMED")?;
    let out = readings
        .into_iter()
        .map(|r| Incoming {
            seq: match r.seq {
                JsonSeq::Number(n) => n,
                // A seq that is not a number is refused as a reading (seq 0), never guessed.
                JsonSeq::Text(t) => t.parse().unwrap_or(0),
            },
            time: chrono::DateTime::parse_from_rfc3339(&r.time).ok().map(|t| t.to_utc()),
            probe: r.probe,
            temp_c: r.temp_c.unwrap_or(f64::NAN),
            power_on: r.power_on,
            battery_pct: r.battery_pct,
            door_open: r.door_open,
            sensor_fault: r.sensor_fault,
        })
        .collect();
    Ok((out, verified, batch.key_version))
}

fn from_proto(
    payload: &[u8],
    key: &[u8],
    device_id: &str,
) -> std::result::Result<(Vec<Incoming>, bool, u32), &'static str> {
    let (batch, verified) = match signing::verify_signed(payload, key) {
        Ok(Verified::Valid(b)) => (b, true),
        Ok(Verified::Unsigned(b)) => (b, false),
        Ok(Verified::BadSignature) => return Err("BAD_SIGNATURE"),
        Err(_) => return Err("MALFORMED"),
    };
    if !batch.device_id.is_empty() && batch.device_id != device_id {
        return Err("DEVICE_MISMATCH");
    }
    let out = batch
        .readings
        .iter()
        .map(|r| Incoming {
            seq: r.seq,
            time: r.time.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))),
            probe: r.probe,
            temp_c: r.temp_c,
            power_on: r.power_on,
            battery_pct: r.battery_pct,
            door_open: r.door_open,
            sensor_fault: r.sensor_fault.unwrap_or(false),
        })
        .collect();
    Ok((out, verified, batch.key_version))
}

impl App {
    /// Registers a logger at a facility; returns the device and its first HMAC key (shown to
    /// this call, and again to a retry with the same request_id by the same token).
    pub async fn register_device(
        &self,
        caller: &Caller,
        request_id: &str,
        input: DeviceInput,
    ) -> Result<(Device, Vec<u8>)> {
        caller.require(Action::SetPolicies)?;
        let new = NewDevice::parse(input)?;
        let idem = Idempotency::from_request(caller, "RegisterDevice", request_id, &new)?;
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let stored = self
            .idempotent(idem.as_ref(), async {
                let facility = match self.store.get_facility(&new.facility_id).await? {
                    Some(f) if caller.covers(&f.path) => f,
                    Some(_) => return Err(Error::PermissionDenied),
                    None => return Err(caller.not_found("FACILITY_NOT_FOUND", "facility")),
                };
                self.check_probes(&facility.id, &new.probes).await?;
                let t = now();
                let device = Device {
                    id: new_id(),
                    serial: new.serial.clone(),
                    name: new.name.clone(),
                    model: new.model.clone(),
                    facility_id: facility.id,
                    probes: new.probes.clone(),
                    expected_interval_secs: new.expected_interval_secs,
                    unsigned_allowed: new.unsigned_allowed,
                    key_version: 1,
                    key_rotated_at: t,
                    last_seen_at: None,
                    last_seq: 0,
                    seq_offset: 0,
                    online: false,
                    active: true,
                    created_at: t,
                    updated_at: t,
                };
                let sealed = Self::seal_for(caller, idem.as_ref(), &key)?;
                self.store.insert_device(idem.as_ref(), &device, &key, sealed.as_deref()).await
            })
            .await?;
        let key = Self::secret_of(caller, idem.as_ref(), key, stored.sealed_secret.as_deref())?;
        Ok((stored.value, key))
    }

    /// Checks that every probe's storage unit exists and is at the device's facility.
    async fn check_probes(&self, facility_id: &str, probes: &[Probe]) -> Result<()> {
        for (i, p) in probes.iter().enumerate() {
            match self.store.get_storage_unit(&p.storage_unit_id).await? {
                Some((u, _)) if u.facility_id == facility_id => {}
                Some(_) => {
                    return Err(Error::precondition(
                        "STORAGE_UNIT_OTHER_FACILITY",
                        format!("probes[{i}]: the storage unit is at another facility"),
                    ));
                }
                None => {
                    return Err(Error::not_found(
                        "STORAGE_UNIT_NOT_FOUND",
                        format!("probes[{i}]: storage unit not found"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A device the caller may see; a hidden or missing one is indistinguishable for scoped callers.
    async fn visible_device(&self, caller: &Caller, id: &str) -> Result<Device> {
        match self.store.get_device(id).await? {
            Some((d, _, path)) if caller.covers(&path) => Ok(d),
            Some(_) => Err(Error::PermissionDenied),
            None => Err(caller.not_found("DEVICE_NOT_FOUND", "device")),
        }
    }

    /// Reads a device (never its key).
    pub async fn get_device(&self, caller: &Caller, id: &str) -> Result<Device> {
        caller.require(Action::ReadFacilities)?;
        let id = validate::id("id", id)?;
        self.visible_device(caller, &id).await
    }

    /// Lists devices in scope, optionally at a facility, in a subtree or probing a storage unit.
    pub async fn list_devices(
        &self,
        caller: &Caller,
        facility_id: &str,
        ancestor_id: &str,
        storage_unit_id: &str,
        include_inactive: bool,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<Device>> {
        caller.require(Action::ReadFacilities)?;
        let facility_id = validate::optional_id("facility_id", facility_id)?;
        let ancestor_id = validate::optional_id("ancestor_id", ancestor_id)?;
        let storage_unit_id = validate::optional_id("storage_unit_id", storage_unit_id)?;
        let ancestor_path = match &ancestor_id {
            Some(a) => Some(self.visible_facility(caller, a, reason::NOT_FOUND).await?.path),
            None => None,
        };
        if let Some(f) = &facility_id {
            self.visible_facility(caller, f, reason::NOT_FOUND).await?;
        }
        if let Some(u) = &storage_unit_id {
            self.visible_unit(caller, u).await?;
        }
        let filter = DeviceFilter { facility_id, ancestor_path, storage_unit_id, include_inactive };
        let page = PageRequest::parse(page_size, page_token, &filter)?;
        self.store.list_devices(&caller.scope_path, &filter, &page).await
    }

    /// Changes the fields named in `mask` (empty = all mutable ones) of a device in scope; a new
    /// facility must be in scope too, and the probes must end up at the device's facility.
    pub async fn update_device(
        &self,
        caller: &Caller,
        request_id: &str,
        id: &str,
        input: DeviceInput,
        mask: &[String],
    ) -> Result<Device> {
        caller.require(Action::SetPolicies)?;
        let id = validate::id("device.id", id)?;
        let patch = DevicePatch::parse(input, mask)?;
        let idem = Idempotency::from_request(caller, "UpdateDevice", request_id, &(&id, &patch))?;
        let updated = self
            .idempotent(idem.as_ref(), async {
                let current = self.visible_device(caller, &id).await?;
                let facility_id = match &patch.facility_id {
                    Some(f) => self.visible_facility(caller, f, "FACILITY_NOT_FOUND").await?.id,
                    None => current.facility_id.clone(),
                };
                if patch.moves_probes() {
                    self.check_probes(&facility_id, patch.probes.as_deref().unwrap_or(&current.probes)).await?;
                }
                self.store.update_device(idem.as_ref(), &id, &patch).await
            })
            .await;
        self.devices.forget(&id);
        updated?.ok_or_else(|| caller.not_found("DEVICE_NOT_FOUND", "device"))
    }

    /// Issues a device a new HMAC key (shown to this call, and again to a retry with the same
    /// request_id by the same token; from then on only it verifies); with
    /// `reset_sequence` the device may restart at seq 1 (a replaced or factory-reset logger).
    pub async fn rotate_device_key(
        &self,
        caller: &Caller,
        request_id: &str,
        id: &str,
        reset_sequence: bool,
    ) -> Result<(Device, Vec<u8>)> {
        caller.require(Action::SetPolicies)?;
        let id = validate::id("id", id)?;
        let idem = Idempotency::from_request(caller, "RotateDeviceKey", request_id, &(&id, reset_sequence))?;
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let rotated = self
            .idempotent(idem.as_ref(), async {
                self.visible_device(caller, &id).await?;
                let sealed = Self::seal_for(caller, idem.as_ref(), &key)?;
                self.store.rotate_device_key(idem.as_ref(), &id, &key, reset_sequence, sealed.as_deref()).await
            })
            .await;
        self.devices.forget(&id);
        let device = rotated?.ok_or_else(|| caller.not_found("DEVICE_NOT_FOUND", "device"))?;
        let key = Self::secret_of(caller, idem.as_ref(), key, device.sealed_secret.as_deref())?;
        Ok((device.value, key))
    }

    /// Lists raw readings of a device or a storage unit in a time range, ordered by reading time,
    /// device id and seq; only readings taken in units inside the caller's scope.
    pub async fn list_readings(
        &self,
        caller: &Caller,
        device_id: &str,
        storage_unit_id: &str,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<RecordedReading>> {
        caller.require(Action::ReadFacilities)?;
        let source = ReadingSource::parse(device_id, storage_unit_id)?;
        let range = TimeRange::parse(start, end, now())?;
        // The request's own end, not the resolved "now": the next page's now is later, and the
        // keyset order makes readings arriving meanwhile appear after what was already served.
        let page = PageRequest::parse(page_size, page_token, &(&source, range.start, end))?;
        let after = page.after.as_deref().map(ReadingCursor::parse).transpose()?;
        match &source {
            ReadingSource::Device(id) => {
                self.visible_device(caller, id).await?;
            }
            ReadingSource::StorageUnit(id) => {
                self.visible_unit(caller, id).await?;
            }
        }
        let rows =
            self.store.list_readings(&caller.scope_path, &source, &range, after.as_ref(), page.fetch_limit()).await?;
        Ok(page.finish_keyed(rows, |r| ReadingCursor::after(r).encode()))
    }

    /// A storage unit's readings downsampled into epoch-aligned buckets of `bucket_secs`.
    pub async fn query_readings(
        &self,
        caller: &Caller,
        storage_unit_id: &str,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        bucket_secs: i64,
        bucket_nanos: i32,
    ) -> Result<Vec<ReadingBucket>> {
        caller.require(Action::ReadFacilities)?;
        let unit = validate::id("storage_unit_id", storage_unit_id)?;
        let range = TimeRange::parse(start, end, now())?;
        let bucketing = Bucketing::parse(bucket_secs, bucket_nanos, range)?;
        self.visible_unit(caller, &unit).await?;
        self.store.bucket_readings(&unit, &bucketing).await
    }

    /// The latest reading of every monitored storage unit (one with a probe of an active device)
    /// under `ancestor_id`, or the caller's whole scope, by unit id.
    pub async fn latest_readings(
        &self,
        caller: &Caller,
        ancestor_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<LatestReading>> {
        caller.require(Action::ReadFacilities)?;
        let ancestor_id = validate::optional_id("ancestor_id", ancestor_id)?;
        let page = PageRequest::parse(page_size, page_token, &ancestor_id)?;
        let path = match &ancestor_id {
            Some(a) => self.visible_facility(caller, a, reason::NOT_FOUND).await?.path,
            None => caller.scope_path.clone(),
        };
        let rows = self.store.latest_readings(&path, page.after.as_deref(), page.fetch_limit()).await?;
        let t = now();
        let items = rows
            .into_iter()
            .map(|(storage_unit_id, facility_id, latest)| {
                let stale =
                    tm::is_stale(latest.as_ref().map(|(r, _)| r.reading.time), latest.as_ref().map_or(0, |l| l.1), t);
                LatestReading { storage_unit_id, facility_id, reading: latest.map(|(r, _)| r), stale }
            })
            .collect();
        Ok(page.finish(items, |l| &l.storage_unit_id))
    }

    /// Ingests one batch published on a device's readings topic. The device comes from the topic
    /// and must be proven by the batch's signature (or be registered as unsigned): the topic alone
    /// is not trusted, since a broker may not enforce topic ACLs. Returns the ack to publish; an
    /// `Err` is a storage failure, after which nothing is acked and the device re-sends.
    pub async fn ingest(&self, device_id: &str, payload: &[u8], json: bool) -> Result<Ack> {
        let msg = ReadingsMessage { device_id, payload, json };
        self.ingest_many(&[msg]).await.pop().unwrap_or_else(|| Err(Error::Internal("no answer for a batch".into())))
    }

    /// Ingests many batches (of any devices) in ONE database transaction, then evaluates the
    /// alarms of every probe they moved, and returns one answer per message, in order, as
    /// [`App::ingest`] would. Each message is checked on its own before the transaction, so an
    /// invalid one is refused alone; if the transaction fails, each message is retried in a
    /// transaction of its own, so one device whose writes fail cannot hold the others back, and
    /// only the failing ones get an `Err` (nothing of theirs committed: no ack).
    pub async fn ingest_many(&self, msgs: &[ReadingsMessage<'_>]) -> Vec<Result<Ack>> {
        self.ingest_group(msgs, 0).await
    }

    fn ingest_group<'a>(
        &'a self,
        msgs: &'a [ReadingsMessage<'a>],
        attempt: u32,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Result<Ack>>> + Send + 'a>> {
        Box::pin(async move {
            let t = now();
            let mut out: Vec<Option<Result<Ack>>> = (0..msgs.len()).map(|_| None).collect();
            // Check every message; the device comes from the cache on a first attempt. A refusal
            // is never based on a cached device: it is checked again against the database.
            let mut ready: Vec<(usize, Arc<KnownDevice>, Checked)> = Vec::new();
            for (i, m) in msgs.iter().enumerate() {
                let Ok(id) = validate::id("device_id", m.device_id) else {
                    out[i] = Some(Ok(Ack::refused(0, "DEVICE_NOT_REGISTERED")));
                    continue;
                };
                let mut fresh = attempt > 0;
                let mut known = if fresh { None } else { self.devices.get(&id) };
                loop {
                    let device = match known.take() {
                        Some(d) => d,
                        None => match self.store.get_device(&id).await {
                            Ok(Some((device, key, _))) => {
                                fresh = true;
                                let d = Arc::new(KnownDevice { device, key });
                                self.devices.put(&d);
                                d
                            }
                            Ok(None) => {
                                out[i] = Some(Ok(Ack::refused(0, "DEVICE_NOT_REGISTERED")));
                                break;
                            }
                            Err(e) => {
                                out[i] = Some(Err(e));
                                break;
                            }
                        },
                    };
                    match check_batch(&device.device, &device.key, m.payload, m.json, t) {
                        Checked::Refused(_) if !fresh => self.devices.forget(&id),
                        Checked::Refused(ack) => {
                            out[i] = Some(Ok(ack));
                            break;
                        }
                        c @ Checked::Ready { .. } => {
                            ready.push((i, device, c));
                            break;
                        }
                    }
                }
            }
            // One share per device; a device met again with another version of itself (the cache
            // was refreshed in between) is left for a second pass.
            let mut shares: Vec<DeviceReadings> = Vec::new();
            let mut share_of: Vec<Option<usize>> = vec![None; msgs.len()];
            let mut later: Vec<usize> = Vec::new();
            let mut devices: Vec<Arc<KnownDevice>> = Vec::new();
            for (i, device, c) in &ready {
                let Checked::Ready { rows, rejects, .. } = c else { continue };
                let d = &device.device;
                match shares.iter().position(|s| s.device_id == d.id) {
                    Some(k) if shares[k].key_version == d.key_version && shares[k].updated_at == d.updated_at => {
                        shares[k].readings.extend(rows.iter().cloned());
                        shares[k].rejects.extend(rejects.iter().copied());
                        share_of[*i] = Some(k);
                    }
                    Some(_) => later.push(*i),
                    None => {
                        shares.push(DeviceReadings {
                            device_id: d.id.clone(),
                            key_version: d.key_version,
                            updated_at: d.updated_at,
                            readings: rows.clone(),
                            rejects: rejects.clone(),
                        });
                        devices.push(device.clone());
                        share_of[*i] = Some(shares.len() - 1);
                    }
                }
            }
            let mut retry: Vec<usize> = later;
            let mut halves = false;
            match self.store.store_reading_groups(&shares, t).await {
                Err(e) if ready.len() > 1 => {
                    // Nothing committed, and which device failed is unknown: each half again in a
                    // transaction of its own, down to the failing message alone (log2 of the
                    // group's size rounds), so one bad device does not cost everyone a
                    // transaction per message.
                    tracing::warn!(error = %e, messages = ready.len(), "grouped ingest failed; retrying in halves");
                    halves = true;
                }
                Err(e) => {
                    for (i, ..) in &ready {
                        out[*i] = Some(Err(Error::Internal(e.to_string())));
                    }
                }
                Ok(outcomes) => {
                    let mut moved: Vec<super::coldchain::DeviceProbes> = Vec::new();
                    for (k, outcome) in outcomes.iter().enumerate() {
                        let Some(device) = devices.get(k) else { continue };
                        let d = &device.device;
                        match outcome {
                            GroupOutcome::Stale => {
                                // Changed since it was read (here or by another replica).
                                self.devices.forget(&d.id);
                                if attempt < 2 {
                                    retry.extend(
                                        share_of.iter().enumerate().filter(|(_, s)| **s == Some(k)).map(|(i, _)| i),
                                    );
                                } else {
                                    for (i, _) in share_of.iter().enumerate().filter(|(_, s)| **s == Some(k)) {
                                        out[i] = Some(Ok(Ack::refused(d.last_seq - d.seq_offset, "BAD_SIGNATURE")));
                                    }
                                }
                            }
                            GroupOutcome::Stored { acked, inserted } => {
                                let acked_seq = (acked - d.seq_offset).max(0);
                                for (i, dev, c) in &ready {
                                    let (Checked::Ready { rows, rejected, .. }, Some(true)) =
                                        (c, share_of[*i].map(|s| s == k))
                                    else {
                                        continue;
                                    };
                                    debug_assert_eq!(dev.device.id, d.id);
                                    self.metrics.ingested(rows.len() as u64);
                                    out[*i] = Some(Ok(Ack { acked_seq, rejected: *rejected, error: "" }));
                                }
                                // Only readings that were new move the alarms: a re-sent batch
                                // changes nothing.
                                let probes: Vec<(Probe, DateTime<Utc>)> = d
                                    .probes
                                    .iter()
                                    .filter_map(|p| {
                                        shares[k]
                                            .readings
                                            .iter()
                                            .filter(|r| r.probe == p.index && inserted.contains(&r.seq))
                                            .map(|r| r.time)
                                            .min()
                                            .map(|earliest| (p.clone(), earliest))
                                    })
                                    .collect();
                                if !probes.is_empty() {
                                    moved.push((d.clone(), probes));
                                }
                            }
                        }
                    }
                    // Alarms before the acks, so an alert is visible by the time the device hears
                    // back. A failure leaves the readings stored; the next evaluation catches up.
                    if !moved.is_empty()
                        && let Err(e) = self.evaluate_devices(&moved).await
                    {
                        tracing::error!(error = %e, devices = moved.len(), "alarm evaluation failed");
                    }
                }
            }
            if halves {
                // In message order, so a device's batches are still stored in arrival order.
                let idx: Vec<usize> = ready.iter().map(|(i, ..)| *i).collect();
                let (first, second) = idx.split_at(idx.len() / 2);
                for half in [first, second] {
                    let sub: Vec<ReadingsMessage<'_>> = half.iter().map(|i| msgs[*i]).collect();
                    for (i, answer) in half.iter().zip(self.ingest_group(&sub, attempt).await) {
                        out[*i] = Some(answer);
                    }
                }
                retry.clear();
            }
            retry.sort_unstable();
            retry.dedup();
            for i in retry {
                let one = std::slice::from_ref(&msgs[i]);
                out[i] = self.ingest_group(one, attempt + 1).await.pop();
            }
            out.into_iter().map(|o| o.unwrap_or_else(|| Err(Error::Internal("batch left unanswered".into())))).collect()
        })
    }
}

/// One message from a device's readings topic, for [`App::ingest_many`].
#[derive(Debug, Clone, Copy)]
pub struct ReadingsMessage<'a> {
    /// The device id from the topic.
    pub device_id: &'a str,
    /// The payload as published.
    pub payload: &'a [u8],
    /// The JSON form (`readings/json`) rather than protobuf.
    pub json: bool,
}

/// Seqs (in storage, i.e. shifted by the device's offset) refused for good, each with its reason.
pub type Rejects = Vec<(i64, &'static str)>;

/// A message checked against its device, before any write.
#[derive(Debug)]
pub enum Checked {
    /// Refused as a whole: nothing to store, this is the answer.
    Refused(Ack),
    /// Valid readings (seqs shifted by the device's offset) and refused ones.
    Ready {
        /// Readings to store.
        rows: Vec<StoredReading>,
        /// Stored seqs refused for their content, with the reason (acked, never stored).
        rejects: Rejects,
        /// How many readings were refused.
        rejected: u32,
    },
}

/// Checks a batch against its device: authenticity, key version, size, and each reading.
/// Pure (no I/O), and the whole of what a payload from the broker goes through before the
/// database: public so the fuzz targets drive exactly this.
pub fn check_batch(device: &Device, key: &[u8], payload: &[u8], json: bool, t: DateTime<Utc>) -> Checked {
    // The device and its acks count in its own seqs; storage in seqs shifted by seq_offset.
    let offset = device.seq_offset;
    let last = device.last_seq - offset;
    if !device.active {
        return Checked::Refused(Ack::refused(last, "DEVICE_INACTIVE"));
    }
    let parsed = if json { from_json(payload, key) } else { from_proto(payload, key, &device.id) };
    let (incoming, verified, key_version) = match parsed {
        Ok(p) => p,
        Err(e) => return Checked::Refused(Ack::refused(last, e)),
    };
    if verified && key_version != 0 && i64::from(key_version) != i64::from(device.key_version) {
        return Checked::Refused(Ack::refused(last, "BAD_SIGNATURE"));
    }
    if !verified && !device.unsigned_allowed {
        return Checked::Refused(Ack::refused(last, "SIGNATURE_REQUIRED"));
    }
    if incoming.len() > MAX_BATCH {
        return Checked::Refused(Ack::refused(last, "TOO_MANY_READINGS"));
    }
    let mut rows = Vec::with_capacity(incoming.len());
    let mut rejects = Vec::new();
    let mut rejected = 0u32;
    for r in &incoming {
        let unit = device.probes.iter().find(|p| p.index == r.probe).map(|p| p.storage_unit_id.clone());
        match (tm::reject_reason(r, unit.is_some(), t), unit, r.time, i64::try_from(r.seq)) {
            (None, Some(storage_unit_id), Some(time), Ok(seq)) if seq.checked_add(offset).is_some() => {
                rows.push(StoredReading {
                    seq: seq + offset,
                    probe: r.probe,
                    storage_unit_id,
                    time,
                    temp_c: (!r.sensor_fault).then_some(r.temp_c),
                    power_on: r.power_on,
                    battery_pct: r.battery_pct,
                    door_open: r.door_open,
                    sensor_fault: r.sensor_fault,
                    verified,
                })
            }
            (reason, ..) => {
                let reason = reason.unwrap_or("SEQ_INVALID");
                tracing::info!(device = %device.id, seq = r.seq, reason, "reading rejected");
                rejected += 1;
                if let Some(seq) = i64::try_from(r.seq).ok().and_then(|s| s.checked_add(offset))
                    && seq > offset
                {
                    rejects.push((seq, reason));
                }
            }
        }
    }
    Checked::Ready { rows, rejects, rejected }
}

/// A device with its HMAC key, as ingest checks batches against it.
pub(crate) struct KnownDevice {
    device: Device,
    key: Vec<u8>,
}

/// How long ingest reuses a device read from the database. Correctness does not depend on it:
/// every accepted batch is re-checked at commit against the device row (key version and
/// `updated_at`, under its lock), and a batch is never refused on a cached device without
/// reading it again. It only bounds memory held for devices that went quiet.
pub const DEVICE_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Devices by id, so a message costs no device look-up (2 queries) in the common case.
#[derive(Default)]
pub(crate) struct DeviceCache(std::sync::Mutex<HashMap<String, (Arc<KnownDevice>, std::time::Instant)>>);

impl std::fmt::Debug for DeviceCache {
    // Keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCache").finish_non_exhaustive()
    }
}

impl DeviceCache {
    /// Bounds memory under a flood of distinct device ids.
    const MAX_ENTRIES: usize = 100_000;

    fn get(&self, id: &str) -> Option<Arc<KnownDevice>> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(id).filter(|(_, at)| at.elapsed() < DEVICE_CACHE_TTL).map(|(d, _)| d.clone())
    }

    fn put(&self, d: &Arc<KnownDevice>) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= Self::MAX_ENTRIES {
            m.retain(|_, (_, at)| at.elapsed() < DEVICE_CACHE_TTL);
            if m.len() >= Self::MAX_ENTRIES {
                m.clear();
            }
        }
        m.insert(d.device.id.clone(), (d.clone(), std::time::Instant::now()));
    }

    /// After an update, a rotation or a deactivation made through this process.
    pub(crate) fn forget(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// A device's notice that readings are lost for good (`.../status/dropped`).
#[derive(Debug, serde::Deserialize)]
struct DroppedNotice<'a> {
    #[serde(borrow)]
    ranges: &'a serde_json::value::RawValue,
    #[serde(default)]
    signature: Option<String>,
}

/// One lost range of seqs.
#[derive(Debug, serde::Deserialize)]
struct DroppedRange {
    first_seq: u64,
    last_seq: u64,
}

/// Most seqs one notice may declare lost: a bound on the rows it writes.
const MAX_DROPPED: u64 = 1_000_000;

/// Checks a device's notice of seqs lost for good against the device: state, signature, shape
/// and size. Returns the lost seqs (shifted by the device's offset) to record as refused, and
/// how many the notice declares; or the error for the ack. Pure, like [`check_batch`].
pub fn check_dropped(device: &Device, key: &[u8], payload: &[u8]) -> std::result::Result<(Rejects, u64), &'static str> {
    if !device.active {
        return Err("DEVICE_INACTIVE");
    }
    let notice = serde_json::from_slice::<DroppedNotice<'_>>(payload).map_err(|_| "MALFORMED")?;
    if !verify_json(key, notice.ranges.get(), notice.signature.as_deref())? && !device.unsigned_allowed {
        return Err("SIGNATURE_REQUIRED");
    }
    let ranges = serde_json::from_str::<Vec<DroppedRange>>(notice.ranges.get()).map_err(|_| "MALFORMED")?;
    let mut total = 0u64;
    for r in &ranges {
        if r.first_seq == 0 || r.last_seq < r.first_seq {
            return Err("MALFORMED");
        }
        total = total.saturating_add(r.last_seq - r.first_seq + 1);
    }
    if total > MAX_DROPPED {
        return Err("TOO_MANY_READINGS");
    }
    let mut rejects = Vec::new();
    for r in &ranges {
        for seq in r.first_seq..=r.last_seq {
            if let Some(seq) = i64::try_from(seq).ok().and_then(|s| s.checked_add(device.seq_offset)) {
                rejects.push((seq, "DROPPED_BY_DEVICE"));
            }
        }
    }
    Ok((rejects, total))
}

impl App {
    /// Records readings a device declares lost for good (its disk cap forced them out), so its
    /// contiguous ack can move past the gap instead of stalling forever; returns the new ack.
    /// The notice is signed like a JSON batch (HMAC over the exact `ranges` bytes).
    pub async fn record_dropped(&self, device_id: &str, payload: &[u8]) -> Result<Ack> {
        let Ok(id) = validate::id("device_id", device_id) else { return Ok(Ack::refused(0, "DEVICE_NOT_REGISTERED")) };
        let Some((device, key, _)) = self.store.get_device(&id).await? else {
            return Ok(Ack::refused(0, "DEVICE_NOT_REGISTERED"));
        };
        let offset = device.seq_offset;
        let last = device.last_seq - offset;
        let (rejects, total) = match check_dropped(&device, &key, payload) {
            Ok(checked) => checked,
            Err(e) => return Ok(Ack::refused(last, e)),
        };
        tracing::warn!(device = %device.id, readings = total, "device reports readings lost for good");
        let Some((acked, _)) = self.store.store_readings(&device.id, device.key_version, &[], &rejects, now()).await?
        else {
            return Ok(Ack::refused(last, "BAD_SIGNATURE"));
        };
        self.metrics.dropped_by_device(total);
        Ok(Ack { acked_seq: (acked - offset).max(0), rejected: 0, error: "" })
    }
}

/// The protobuf ack for a device.
pub fn ack_message(device_id: &str, ack: &Ack) -> Vec<u8> {
    pb::ReadingAck {
        device_id: device_id.to_owned(),
        acked_seq: u64::try_from(ack.acked_seq).unwrap_or(0),
        rejected_count: ack.rejected,
        error: ack.error.to_owned(),
    }
    .encode_to_vec()
}

/// The JSON ack for a device.
pub fn ack_json(device_id: &str, ack: &Ack) -> Vec<u8> {
    serde_json::json!({
        "device_id": device_id,
        "acked_seq": ack.acked_seq,
        "rejected_count": ack.rejected,
        "error": ack.error,
    })
    .to_string()
    .into_bytes()
}
