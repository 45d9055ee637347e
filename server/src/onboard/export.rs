//! Rendering what the database holds in the import formats, so data leaves vaxtrace as it
//! enters. Rows are sorted by their natural keys (never by ids, which differ between
//! databases), so an export, imported into an empty database and exported again, gives the
//! same bytes.

use std::collections::{BTreeSet, HashMap};

use chrono::SecondsFormat;

use super::format::{self, Column, Named, write_csv};
use super::plan::Snapshot;
use super::rows::{hex, override_cells};
use crate::domain::telemetry::RecordedReading;

/// What to include beyond the entities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Write each logger's HMAC key (`key_hex`): a secret, for moving loggers to another
    /// database without re-provisioning them.
    pub include_device_keys: bool,
}

/// One exported file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFile {
    /// File name.
    pub name: &'static str,
    /// Data rows (the header not counted).
    pub rows: usize,
    /// CSV bytes.
    pub bytes: Vec<u8>,
}

fn opt_f64(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

fn file(spec: format::FileSpec, mut rows: Vec<Vec<String>>) -> ExportFile {
    rows.sort();
    ExportFile { name: spec.name, rows: rows.len(), bytes: write_csv(spec.columns, rows) }
}

/// Renders every entity of the snapshot in the import formats, one file per format.
pub fn render(snap: &Snapshot, opts: ExportOptions) -> Vec<ExportFile> {
    let fac: HashMap<&str, &crate::domain::Facility> = snap.facilities.iter().map(|f| (f.id.as_str(), f)).collect();
    let code = |id: &str| fac.get(id).map_or(String::new(), |f| f.code.clone());
    let units: HashMap<&str, &crate::domain::StorageUnit> = snap.units.iter().map(|u| (u.id.as_str(), u)).collect();
    let products: HashMap<&str, &crate::domain::Product> = snap.products.iter().map(|p| (p.id.as_str(), p)).collect();
    let pcode = |id: &str| products.get(id).map_or(String::new(), |p| p.code.clone());
    let lots: HashMap<&str, &crate::domain::Lot> = snap.lots.iter().map(|l| (l.id.as_str(), l)).collect();
    let serials: HashMap<&str, &str> = snap.devices.iter().map(|d| (d.id.as_str(), d.serial.as_str())).collect();

    // Parents before children: the kind orders the tree, and sorting keeps kind first.
    let mut facilities: Vec<Vec<String>> = snap
        .facilities
        .iter()
        .map(|f| {
            vec![
                f.code.clone(),
                f.parent_id.as_deref().map(code).unwrap_or_default(),
                f.kind.csv_name().to_owned(),
                f.name.clone(),
                f.gln.clone(),
                f.external_id.clone(),
                opt_f64(f.latitude),
                opt_f64(f.longitude),
                f.active.to_string(),
            ]
        })
        .collect();
    let kind_rank =
        |name: &str| crate::domain::FacilityKind::NAMES.iter().position(|(_, n)| *n == name).unwrap_or(usize::MAX);
    facilities.sort_by(|a, b| (kind_rank(&a[2]), &a[0]).cmp(&(kind_rank(&b[2]), &b[0])));
    let facilities = ExportFile {
        name: format::FACILITIES.name,
        rows: facilities.len(),
        bytes: write_csv(format::FACILITIES.columns, facilities),
    };

    let storage_units = snap
        .units
        .iter()
        .map(|u| {
            let mut row = vec![
                code(&u.facility_id),
                u.name.clone(),
                u.kind.csv_name().to_owned(),
                u.temperature_profile.csv_name().to_owned(),
                u.capacity_litres.to_string(),
                u.active.to_string(),
            ];
            row.extend(override_cells(&u.alarm_overrides));
            row
        })
        .collect();

    let product_rows = snap
        .products
        .iter()
        .map(|p| {
            vec![
                p.code.clone(),
                p.name.clone(),
                p.vaccine.clone(),
                p.doses_per_vial.to_string(),
                p.presentation.csv_name().to_owned(),
                p.vvm_type.csv_name().to_owned(),
                p.temperature_profile.csv_name().to_owned(),
                p.acceptable_wastage_bp.to_string(),
                p.multi_dose_vial_policy.to_string(),
                p.gtins.join(";"),
                p.active.to_string(),
            ]
        })
        .collect();

    let lot_rows = snap
        .lots
        .iter()
        .map(|l| {
            vec![
                pcode(&l.product_id),
                l.lot_number.clone(),
                l.expiry.format("%Y-%m-%d").to_string(),
                l.gtin.clone(),
                l.manufacturer.clone(),
            ]
        })
        .collect();

    let balances = snap
        .balances
        .iter()
        .filter(|b| b.vials > 0)
        .filter_map(|b| {
            let u = units.get(b.storage_unit_id.as_str())?;
            let l = lots.get(b.lot_id.as_str())?;
            Some(vec![
                code(&u.facility_id),
                u.name.clone(),
                pcode(&l.product_id),
                l.lot_number.clone(),
                b.vials.to_string(),
            ])
        })
        .collect();

    let policies = snap
        .policies
        .iter()
        .map(|p| vec![code(&p.facility_id), pcode(&p.product_id), p.min_doses.to_string(), p.max_doses.to_string()])
        .collect();

    let devices = snap
        .devices
        .iter()
        .map(|d| {
            let key = if opts.include_device_keys {
                snap.device_keys.get(&d.id).map(|k| hex(k)).unwrap_or_default()
            } else {
                String::new()
            };
            vec![
                d.serial.clone(),
                code(&d.facility_id),
                d.name.clone(),
                d.model.clone(),
                d.expected_interval_secs.to_string(),
                d.unsigned_allowed.to_string(),
                d.active.to_string(),
                key,
            ]
        })
        .collect();

    let mut probe_rows: Vec<(String, u32, String, String)> = snap
        .devices
        .iter()
        .flat_map(|d| {
            d.probes.iter().map(|p| {
                let unit = units.get(p.storage_unit_id.as_str()).map_or(String::new(), |u| u.name.clone());
                (d.serial.clone(), p.index, unit, p.label.clone())
            })
        })
        .collect();
    // Sorted on the number, so probe 2 comes before probe 10.
    probe_rows.sort();
    let probes: Vec<Vec<String>> = probe_rows.into_iter().map(|(s, i, u, l)| vec![s, i.to_string(), u, l]).collect();

    // The key of a token is its role, scope, device and description; duplicates export once.
    let tokens: BTreeSet<Vec<String>> = snap
        .tokens
        .iter()
        .map(|t| {
            vec![
                t.role.name().to_owned(),
                t.scope_facility_id.as_deref().map(code).unwrap_or_default(),
                t.device_id.as_deref().and_then(|d| serials.get(d)).map(|s| (*s).to_owned()).unwrap_or_default(),
                t.description.clone(),
            ]
        })
        .collect();

    vec![
        facilities,
        file(format::STORAGE_UNITS, storage_units),
        file(format::PRODUCTS, product_rows),
        file(format::LOTS, lot_rows),
        file(format::OPENING_BALANCES, balances),
        file(format::POLICIES, policies),
        file(format::DEVICES, devices),
        ExportFile { name: format::PROBES.name, rows: probes.len(), bytes: write_csv(format::PROBES.columns, probes) },
        file(format::TOKENS, tokens.into_iter().collect()),
    ]
}

/// The columns of a readings export.
pub const READING_COLUMNS: &[Column] = &[
    Column { name: "time", required: true },
    Column { name: "device_serial", required: true },
    Column { name: "device_id", required: true },
    Column { name: "seq", required: true },
    Column { name: "probe", required: true },
    Column { name: "temp_c", required: false },
    Column { name: "power_on", required: false },
    Column { name: "battery_pct", required: false },
    Column { name: "door_open", required: false },
    Column { name: "sensor_fault", required: true },
    Column { name: "verified", required: true },
    Column { name: "received_at", required: true },
];

/// One readings-export row.
pub fn reading_row(r: &RecordedReading, serial: &str) -> Vec<String> {
    let opt = |b: Option<bool>| b.map(|v| v.to_string()).unwrap_or_default();
    let x = &r.reading;
    vec![
        x.time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        serial.to_owned(),
        r.device_id.clone(),
        x.seq.to_string(),
        x.probe.to_string(),
        x.temp_c.map(|t| t.to_string()).unwrap_or_default(),
        opt(x.power_on),
        x.battery_pct.map(|b| b.to_string()).unwrap_or_default(),
        opt(x.door_open),
        x.sensor_fault.to_string(),
        x.verified.to_string(),
        r.received_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    ]
}
