//! Conversions between the wire types of `vaxtrace.v1` and the domain. The proto crate cannot
//! hold these because the domain types live in this crate.

use chrono::{DateTime, Datelike as _, NaiveDate, Utc};
use vaxtrace_proto::v1 as pb;

use crate::app::IssuedToken;
use crate::domain::catalog::{LotInput, ProductInput};
use crate::domain::facility::{FacilityInput, StorageUnitInput};
use crate::domain::telemetry::{Device, DeviceInput, LatestReading, ReadingBucket, RecordedReading};
use crate::domain::thresholds::{self, AlarmOverrides, AlarmOverridesInput};
use crate::domain::{Facility, Lot, Product, StorageUnit, Token};
use crate::error::Error;

/// A UTC instant on the wire.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0) }
}

/// A calendar date on the wire.
pub fn date(d: NaiveDate) -> pb::Date {
    pb::Date { year: d.year(), month: i32::try_from(d.month()).unwrap_or(0), day: i32::try_from(d.day()).unwrap_or(0) }
}

/// A wire date as unvalidated parts.
pub fn date_parts(d: Option<&pb::Date>) -> Option<(i32, i32, i32)> {
    d.map(|d| (d.year, d.month, d.day))
}

impl From<Facility> for pb::Facility {
    fn from(f: Facility) -> Self {
        pb::Facility {
            ancestor_ids: f.ancestor_ids(),
            id: f.id,
            parent_id: f.parent_id.unwrap_or_default(),
            kind: f.kind.as_i32(),
            code: f.code,
            name: f.name,
            gln: f.gln,
            external_id: f.external_id,
            latitude: f.latitude,
            longitude: f.longitude,
            active: f.active,
            create_time: Some(timestamp(f.created_at)),
            update_time: Some(timestamp(f.updated_at)),
        }
    }
}

/// The writable fields of a wire facility.
pub fn facility_input(f: pb::Facility) -> FacilityInput {
    FacilityInput {
        parent_id: f.parent_id,
        kind: f.kind,
        code: f.code,
        name: f.name,
        gln: f.gln,
        external_id: f.external_id,
        latitude: f.latitude,
        longitude: f.longitude,
        active: f.active,
    }
}

/// Alarm thresholds on the wire: centi-°C as °C, seconds as a Duration.
fn thresholds_pb(o: &AlarmOverrides) -> pb::AlarmThresholds {
    let c = |v: Option<i32>| v.map(|x| f64::from(x) / 100.0);
    let d = |v: Option<i64>| v.map(|seconds| prost_types::Duration { seconds, nanos: 0 });
    pb::AlarmThresholds {
        range_low_c: c(o.range_low_centi),
        range_high_c: c(o.range_high_centi),
        heat_alarm_after: d(o.heat_alarm_secs),
        heat_critical_after: d(o.heat_critical_secs),
        freeze_threshold_c: c(o.freeze_threshold_centi),
        freeze_alarm_after: d(o.freeze_alarm_secs),
        freeze_critical_after: d(o.freeze_critical_secs),
        no_data_after: d(o.no_data_secs),
        power_out_after: d(o.power_out_secs),
    }
}

impl From<StorageUnit> for pb::StorageUnit {
    fn from(u: StorageUnit) -> Self {
        let merged = u.alarm_overrides.apply(thresholds::base_profile(u.temperature_profile));
        let mut effective = AlarmOverrides::of_profile(&merged);
        // Without an override the limit depends on each logger's interval, not on the unit.
        effective.no_data_secs = u.alarm_overrides.no_data_secs;
        pb::StorageUnit {
            alarm_overrides: (!u.alarm_overrides.is_empty()).then(|| thresholds_pb(&u.alarm_overrides)),
            effective_alarm_thresholds: Some(thresholds_pb(&effective)),
            id: u.id,
            facility_id: u.facility_id,
            kind: u.kind.as_i32(),
            name: u.name,
            temperature_profile: u.temperature_profile.as_i32(),
            capacity_litres: u.capacity_litres,
            active: u.active,
            create_time: Some(timestamp(u.created_at)),
            update_time: Some(timestamp(u.updated_at)),
        }
    }
}

/// A wire duration as whole seconds; a fraction of a second is refused, naming the field.
fn whole_seconds(field: &str, d: Option<prost_types::Duration>) -> Result<Option<i64>, Error> {
    match d {
        Some(d) if d.nanos != 0 => {
            Err(Error::invalid(format!("storage_unit.alarm_overrides.{field}"), "must be whole seconds"))
        }
        d => Ok(d.map(|d| d.seconds)),
    }
}

/// The writable fields of a wire storage unit; only a fractional override duration fails here,
/// everything else is validated by the domain.
pub fn storage_unit_input(u: pb::StorageUnit) -> Result<StorageUnitInput, Error> {
    let o = u.alarm_overrides.unwrap_or_default();
    let alarm_overrides = AlarmOverridesInput {
        range_low_c: o.range_low_c,
        range_high_c: o.range_high_c,
        heat_alarm_secs: whole_seconds("heat_alarm_after", o.heat_alarm_after)?,
        heat_critical_secs: whole_seconds("heat_critical_after", o.heat_critical_after)?,
        freeze_threshold_c: o.freeze_threshold_c,
        freeze_alarm_secs: whole_seconds("freeze_alarm_after", o.freeze_alarm_after)?,
        freeze_critical_secs: whole_seconds("freeze_critical_after", o.freeze_critical_after)?,
        no_data_secs: whole_seconds("no_data_after", o.no_data_after)?,
        power_out_secs: whole_seconds("power_out_after", o.power_out_after)?,
    };
    Ok(StorageUnitInput {
        facility_id: u.facility_id,
        kind: u.kind,
        name: u.name,
        temperature_profile: u.temperature_profile,
        capacity_litres: u.capacity_litres,
        active: u.active,
        alarm_overrides,
    })
}

impl From<Product> for pb::Product {
    fn from(p: Product) -> Self {
        pb::Product {
            id: p.id,
            code: p.code,
            name: p.name,
            vaccine: p.vaccine,
            doses_per_vial: p.doses_per_vial,
            presentation: p.presentation.as_i32(),
            vvm_type: p.vvm_type.as_i32(),
            temperature_profile: p.temperature_profile.as_i32(),
            acceptable_wastage_bp: p.acceptable_wastage_bp,
            multi_dose_vial_policy: p.multi_dose_vial_policy,
            gtins: p.gtins,
            active: p.active,
            create_time: Some(timestamp(p.created_at)),
            update_time: Some(timestamp(p.updated_at)),
        }
    }
}

/// The writable fields of a wire product.
pub fn product_input(p: pb::Product) -> ProductInput {
    ProductInput {
        code: p.code,
        name: p.name,
        vaccine: p.vaccine,
        doses_per_vial: p.doses_per_vial,
        presentation: p.presentation,
        vvm_type: p.vvm_type,
        temperature_profile: p.temperature_profile,
        acceptable_wastage_bp: p.acceptable_wastage_bp,
        multi_dose_vial_policy: p.multi_dose_vial_policy,
        gtins: p.gtins,
        active: p.active,
    }
}

impl From<Lot> for pb::Lot {
    fn from(l: Lot) -> Self {
        pb::Lot {
            id: l.id,
            product_id: l.product_id,
            gtin: l.gtin,
            lot_number: l.lot_number,
            manufacturer: l.manufacturer,
            expiry: Some(date(l.expiry)),
            create_time: Some(timestamp(l.created_at)),
        }
    }
}

/// The writable fields of a wire lot.
pub fn lot_input(l: pb::Lot) -> LotInput {
    LotInput {
        expiry: date_parts(l.expiry.as_ref()),
        product_id: l.product_id,
        gtin: l.gtin,
        lot_number: l.lot_number,
        manufacturer: l.manufacturer,
    }
}

impl From<Token> for pb::Token {
    fn from(t: Token) -> Self {
        pb::Token {
            id: t.id,
            role: t.role.as_i32(),
            scope_facility_id: t.scope_facility_id.unwrap_or_default(),
            description: t.description,
            create_time: Some(timestamp(t.created_at)),
            revoke_time: t.revoked_at.map(timestamp),
            device_id: t.device_id.unwrap_or_default(),
        }
    }
}

impl From<IssuedToken> for pb::CreateTokenResponse {
    fn from(t: IssuedToken) -> Self {
        pb::CreateTokenResponse { token: Some(t.token.into()), secret: t.secret }
    }
}

/// An optional wire instant; an out-of-range one (negative nanos included) is an invalid `field`.
pub fn instant(field: &str, t: Option<prost_types::Timestamp>) -> Result<Option<DateTime<Utc>>, Error> {
    match t {
        None => Ok(None),
        Some(t) => u32::try_from(t.nanos)
            .ok()
            .and_then(|n| DateTime::from_timestamp(t.seconds, n))
            .map(Some)
            .ok_or_else(|| Error::invalid(field, "is out of range")),
    }
}

impl From<Device> for pb::Device {
    fn from(d: Device) -> Self {
        pb::Device {
            id: d.id,
            serial: d.serial,
            name: d.name,
            model: d.model,
            facility_id: d.facility_id,
            probes: d
                .probes
                .into_iter()
                .map(|p| pb::Probe { index: p.index, storage_unit_id: p.storage_unit_id, label: p.label })
                .collect(),
            expected_interval: Some(prost_types::Duration { seconds: d.expected_interval_secs, nanos: 0 }),
            unsigned_allowed: d.unsigned_allowed,
            key_version: u32::try_from(d.key_version).unwrap_or(0),
            key_rotate_time: Some(timestamp(d.key_rotated_at)),
            last_seen_time: d.last_seen_at.map(timestamp),
            last_seq: u64::try_from(d.last_seq - d.seq_offset).unwrap_or(0),
            online: d.online,
            active: d.active,
            create_time: Some(timestamp(d.created_at)),
            update_time: Some(timestamp(d.updated_at)),
        }
    }
}

/// The writable fields of a wire webhook.
pub fn webhook_input(w: pb::Webhook) -> crate::domain::webhook::WebhookInput {
    crate::domain::webhook::WebhookInput {
        scope_facility_id: w.scope_facility_id,
        url: w.url,
        kinds: w.kinds,
        min_severity: w.min_severity,
        description: w.description,
    }
}

/// The writable fields of a wire device.
pub fn device_input(d: pb::Device) -> DeviceInput {
    DeviceInput {
        serial: d.serial,
        name: d.name,
        model: d.model,
        facility_id: d.facility_id,
        probes: d.probes.into_iter().map(|p| (p.index, p.storage_unit_id, p.label)).collect(),
        expected_interval_secs: d.expected_interval.map_or(0, |i| i.seconds),
        unsigned_allowed: d.unsigned_allowed,
        active: d.active,
    }
}

impl From<RecordedReading> for pb::RecordedReading {
    fn from(r: RecordedReading) -> Self {
        let s = r.reading;
        pb::RecordedReading {
            device_id: r.device_id,
            storage_unit_id: s.storage_unit_id,
            reading: Some(pb::Reading {
                seq: u64::try_from(s.seq).unwrap_or(0),
                time: Some(timestamp(s.time)),
                probe: s.probe,
                // A fault stores no temperature; the wire says so with sensor_fault.
                temp_c: s.temp_c.unwrap_or(0.0),
                power_on: s.power_on,
                battery_pct: s.battery_pct,
                door_open: s.door_open,
                sensor_fault: s.sensor_fault.then_some(true),
            }),
            receive_time: Some(timestamp(r.received_at)),
            verified: s.verified,
        }
    }
}

impl From<ReadingBucket> for pb::ReadingBucket {
    fn from(b: ReadingBucket) -> Self {
        pb::ReadingBucket {
            start_time: Some(timestamp(b.start)),
            min_temp_c: b.min_temp_c,
            mean_temp_c: b.mean_temp_c,
            max_temp_c: b.max_temp_c,
            count: b.count,
        }
    }
}

impl From<LatestReading> for pb::LatestReading {
    fn from(l: LatestReading) -> Self {
        pb::LatestReading {
            storage_unit_id: l.storage_unit_id,
            facility_id: l.facility_id,
            reading: l.reading.map(Into::into),
            stale: l.stale,
        }
    }
}
