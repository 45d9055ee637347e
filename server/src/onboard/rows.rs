//! Parsing each file into typed rows. Every field of every row is checked and every problem
//! reported (not just the first of a row); a row with a problem is left out of the plan, but its
//! key is remembered so references to it are not reported a second time as "unknown".

use std::collections::HashSet;

use chrono::NaiveDate;

use super::format::{self, FileSpec, Named, Record, Table};
use super::{Problem, SourceFile, dhis2};
use crate::domain::catalog::{Presentation, VvmType, who_max_wastage_bp};
use crate::domain::thresholds::{self, AlarmOverrides, AlarmOverridesInput};
use crate::domain::{FacilityKind, Role, StorageUnitKind, TemperatureProfile, validate};
use crate::error::Error;

/// A row with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    /// File name.
    pub file: String,
    /// Line of the record.
    pub line: u64,
    /// The parsed row.
    pub row: T,
}

impl<T> Located<T> {
    /// A problem at this row and `column`.
    pub fn problem(&self, column: &str, reason: impl Into<String>) -> Problem {
        Problem::new(&self.file, self.line, column, reason)
    }
}

/// How a facility names its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParentRef {
    /// No parent: the national store.
    Root,
    /// A facility code (in the file or the database).
    Code(String),
    /// An external id (a DHIS2 uid) of a facility already in the database.
    ExternalId(String),
}

/// A facility row.
#[derive(Debug, Clone, PartialEq)]
pub struct FacilityRow {
    /// Code.
    pub code: String,
    /// Parent.
    pub parent: ParentRef,
    /// The column the parent came from (for problems).
    pub parent_column: &'static str,
    /// The column the kind came from (for problems).
    pub kind_column: &'static str,
    /// Identified by its external id (a DHIS2 uid) rather than its code, when one matches.
    pub keyed_by_external_id: bool,
    /// Kind.
    pub kind: FacilityKind,
    /// Name.
    pub name: String,
    /// GLN or "".
    pub gln: String,
    /// External id or "".
    pub external_id: String,
    /// Latitude.
    pub latitude: Option<f64>,
    /// Longitude.
    pub longitude: Option<f64>,
    /// Open.
    pub active: bool,
}

/// A storage unit row.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitRow {
    /// Facility code.
    pub facility_code: String,
    /// Name, unique per facility.
    pub name: String,
    /// Kind.
    pub kind: StorageUnitKind,
    /// Profile.
    pub profile: TemperatureProfile,
    /// Capacity.
    pub capacity_litres: f64,
    /// In service.
    pub active: bool,
    /// Alarm threshold overrides, checked against the profile.
    pub alarm_overrides: AlarmOverrides,
}

/// A product row (wastage default applied).
#[derive(Debug, Clone, PartialEq)]
pub struct ProductRow {
    /// Code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Vaccine.
    pub vaccine: String,
    /// Doses per vial.
    pub doses_per_vial: i32,
    /// Presentation.
    pub presentation: Presentation,
    /// VVM type.
    pub vvm_type: VvmType,
    /// Profile.
    pub profile: TemperatureProfile,
    /// Acceptable wastage in basis points.
    pub acceptable_wastage_bp: i32,
    /// MDVP flag.
    pub multi_dose_vial_policy: bool,
    /// GTIN-14s.
    pub gtins: Vec<String>,
    /// In use.
    pub active: bool,
}

/// A lot row.
#[derive(Debug, Clone, PartialEq)]
pub struct LotRow {
    /// Product code.
    pub product_code: String,
    /// Lot number.
    pub lot_number: String,
    /// Expiry.
    pub expiry: NaiveDate,
    /// GTIN-14 or "".
    pub gtin: String,
    /// Manufacturer.
    pub manufacturer: String,
}

/// An opening balance row.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceRow {
    /// Facility code.
    pub facility_code: String,
    /// Storage unit name.
    pub unit_name: String,
    /// Product code.
    pub product_code: String,
    /// Lot number.
    pub lot_number: String,
    /// Vials on hand.
    pub vials: i64,
}

/// A policy row.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRow {
    /// Facility code.
    pub facility_code: String,
    /// Product code.
    pub product_code: String,
    /// Minimum doses.
    pub min_doses: i64,
    /// Maximum doses (0 = none).
    pub max_doses: i64,
}

/// A device row.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRow {
    /// Serial.
    pub serial: String,
    /// Facility code.
    pub facility_code: String,
    /// Name.
    pub name: String,
    /// Model.
    pub model: String,
    /// Expected interval, seconds.
    pub expected_interval_secs: i64,
    /// Unsigned batches accepted.
    pub unsigned_allowed: bool,
    /// Not decommissioned.
    pub active: bool,
    /// The HMAC key the logger already holds, if the country brings one.
    pub key: Option<Vec<u8>>,
}

/// A probe row.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRow {
    /// Device serial.
    pub device_serial: String,
    /// Probe index.
    pub probe: u32,
    /// Storage unit name at the device's facility.
    pub unit_name: String,
    /// Label.
    pub label: String,
}

/// A token row.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRow {
    /// Role.
    pub role: Role,
    /// Scope facility code.
    pub scope_code: Option<String>,
    /// Device serial for device tokens.
    pub device_serial: Option<String>,
    /// Description.
    pub description: String,
}

/// Keys of rows that were present but invalid, so references to them stay quiet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Broken {
    /// Facility codes.
    pub facilities: HashSet<String>,
    /// (facility code, unit name).
    pub units: HashSet<(String, String)>,
    /// Product codes.
    pub products: HashSet<String>,
    /// (product code, lot number).
    pub lots: HashSet<(String, String)>,
    /// Device serials.
    pub devices: HashSet<String>,
}

/// Every parsed row of an import.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    /// Facilities (vaxtrace format and DHIS2 mapped).
    pub facilities: Vec<Located<FacilityRow>>,
    /// Storage units.
    pub units: Vec<Located<UnitRow>>,
    /// Products.
    pub products: Vec<Located<ProductRow>>,
    /// Lots.
    pub lots: Vec<Located<LotRow>>,
    /// Opening balances.
    pub balances: Vec<Located<BalanceRow>>,
    /// Policies.
    pub policies: Vec<Located<PolicyRow>>,
    /// Devices.
    pub devices: Vec<Located<DeviceRow>>,
    /// Probes.
    pub probes: Vec<Located<ProbeRow>>,
    /// Tokens.
    pub tokens: Vec<Located<TokenRow>>,
    /// Keys of invalid rows.
    pub broken: Broken,
    /// Whether a devices file was given (probes need one).
    pub has_devices_file: bool,
}

impl Rows {
    /// Number of data rows parsed, valid or not counted once each (for rates).
    pub fn len(&self) -> usize {
        self.facilities.len()
            + self.units.len()
            + self.products.len()
            + self.lots.len()
            + self.balances.len()
            + self.policies.len()
            + self.devices.len()
            + self.probes.len()
            + self.tokens.len()
    }

    /// True when no valid row was read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The message of a domain validation error, without its field (the column names it).
pub(crate) fn reason_of(e: Error) -> String {
    match e {
        Error::InvalidArgument { message, .. } => message,
        other => other.to_string(),
    }
}

/// Checks one record's fields, collecting a problem per bad field.
struct Cells<'a, 'p> {
    rec: &'a Record<'a>,
    problems: &'p mut Vec<Problem>,
    ok: bool,
}

impl<'a, 'p> Cells<'a, 'p> {
    fn new(rec: &'a Record<'a>, problems: &'p mut Vec<Problem>) -> Self {
        Cells { rec, problems, ok: true }
    }

    fn report(&mut self, column: &str, reason: impl Into<String>) {
        self.problems.push(self.rec.problem(column, reason));
        self.ok = false;
    }

    fn check<T>(&mut self, column: &str, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(reason) => {
                self.report(column, reason);
                None
            }
        }
    }

    fn raw(&self, column: &str) -> &'a str {
        self.rec.get(column)
    }

    fn text(&mut self, column: &str, max: usize) -> Option<String> {
        let v = self.raw(column);
        self.check(column, validate::text(column, v, max).map_err(reason_of))
    }

    fn opt_text(&mut self, column: &str, max: usize) -> Option<String> {
        let v = self.raw(column);
        self.check(column, validate::optional_text(column, v, max).map_err(reason_of))
    }

    fn code(&mut self, column: &str) -> Option<String> {
        let v = self.raw(column);
        self.check(column, validate::code(column, v).map_err(reason_of))
    }

    fn opt_code(&mut self, column: &str) -> Option<Option<String>> {
        if self.raw(column).is_empty() { Some(None) } else { self.code(column).map(Some) }
    }

    fn named<T: Named>(&mut self, column: &str) -> Option<T> {
        let v = self.raw(column);
        if v.is_empty() {
            self.report(column, "is required");
            return None;
        }
        self.check(column, T::parse_name(v))
    }

    fn boolean(&mut self, column: &str, default: bool) -> Option<bool> {
        let v = self.raw(column);
        self.check(column, parse_bool(v, default))
    }

    fn int(&mut self, column: &str, range: std::ops::RangeInclusive<i64>, default: Option<i64>) -> Option<i64> {
        let v = self.raw(column);
        let r = match (v.is_empty(), default) {
            (true, Some(d)) => Ok(d),
            (true, None) => Err("is required".to_owned()),
            (false, _) => match v.parse::<i64>() {
                Ok(n) if range.contains(&n) => Ok(n),
                Ok(_) => Err(format!("must be within {}..{}", range.start(), range.end())),
                Err(_) => Err(format!("'{v}' is not a whole number")),
            },
        };
        self.check(column, r)
    }

    fn opt_float(&mut self, column: &str, lo: f64, hi: f64) -> Option<Option<f64>> {
        let v = self.raw(column);
        if v.is_empty() {
            return Some(None);
        }
        let r = match v.parse::<f64>() {
            Ok(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(Some(x)),
            Ok(_) => Err(format!("must be within {lo}..{hi}")),
            Err(_) => Err(format!("'{v}' is not a number (use a dot for decimals)")),
        };
        self.check(column, r)
    }

    fn opt_span(&mut self, column: &str) -> Option<Option<i64>> {
        let v = self.raw(column);
        if v.is_empty() {
            return Some(None);
        }
        self.check(column, parse_span(v).map(Some))
    }

    fn date(&mut self, column: &str) -> Option<NaiveDate> {
        let v = self.raw(column);
        self.check(column, parse_date(v))
    }
}

/// Parses a duration of whole seconds, minutes or hours (`45s`, `90min`, `10h`; a space before
/// the unit is fine) into seconds.
pub fn parse_span(v: &str) -> Result<i64, String> {
    let bad = || format!("'{v}' is not a duration: a whole number with s, min or h, for example 90min");
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let scale = match unit.trim() {
        "s" => 1,
        "min" => 60,
        "h" => 3600,
        _ => return Err(bad()),
    };
    number.parse::<i64>().ok().and_then(|n| n.checked_mul(scale)).ok_or_else(bad)
}

/// A duration of whole seconds in the largest unit that keeps it whole (`10h`, `90min`, `45s`).
pub fn span_cell(secs: i64) -> String {
    thresholds::span(secs.saturating_mul(1000)).replace(' ', "")
}

/// The override cells of a unit, in the order of `thresholds::FIELDS` ("" when not overridden):
/// °C as plain numbers, durations as [`span_cell`].
pub fn override_cells(o: &AlarmOverrides) -> [String; 9] {
    let t = |v: Option<i32>| v.map(|c| (f64::from(c) / 100.0).to_string()).unwrap_or_default();
    let d = |v: Option<i64>| v.map(span_cell).unwrap_or_default();
    [
        t(o.range_low_centi),
        t(o.range_high_centi),
        d(o.heat_alarm_secs),
        d(o.heat_critical_secs),
        t(o.freeze_threshold_centi),
        d(o.freeze_alarm_secs),
        d(o.freeze_critical_secs),
        d(o.no_data_secs),
        d(o.power_out_secs),
    ]
}

/// Parses `true/false`, `yes/no`, `1/0` (any case); empty gives the default.
pub fn parse_bool(v: &str, default: bool) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "" => Ok(default),
        "true" | "yes" | "y" | "1" => Ok(true),
        "false" | "no" | "n" | "0" => Ok(false),
        _ => Err(format!("'{v}' is not true or false")),
    }
}

/// Parses a calendar date `YYYY-MM-DD`.
pub fn parse_date(v: &str) -> Result<NaiveDate, String> {
    if v.is_empty() {
        return Err("is required".to_owned());
    }
    let bad = || format!("'{v}' is not a date in the form YYYY-MM-DD (for example 2027-06-30)");
    // chrono alone would take "27-2-1" as the year 27: the form is fixed at ten characters.
    if v.len() != 10 {
        return Err(bad());
    }
    let d = NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| bad())?;
    if chrono::Datelike::year(&d) < 1 {
        return Err(bad());
    }
    Ok(d)
}

/// Parses an HMAC key in hex (16..64 bytes).
pub fn parse_key_hex(v: &str) -> Result<Vec<u8>, String> {
    let bad = || "must be an even number of hex digits for a 16..64-byte key".to_owned();
    if !v.len().is_multiple_of(2) || !(32..=128).contains(&v.len()) {
        return Err(bad());
    }
    (0..v.len())
        .step_by(2)
        .map(|i| v.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(bad))
        .collect()
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses every file into rows; unknown file names and format problems go to `problems`.
pub fn parse_files(files: &[SourceFile], levels: &dhis2::LevelMap, problems: &mut Vec<Problem>) -> Rows {
    let mut rows = Rows::default();
    for f in files {
        if format::is_dhis2(&f.name) {
            if let Some(t) = format::read_table(&f.name, &f.bytes, problems) {
                dhis2::parse(&t, levels, &mut rows, problems);
            }
            continue;
        }
        let Some(spec) = format::FILES.iter().find(|s| s.name == f.name) else {
            let names: Vec<&str> = format::FILES.iter().map(|s| s.name).collect();
            problems.push(Problem::new(
                &f.name,
                0,
                "",
                format!("not an onboarding file; expected {} or {}", names.join(", "), format::DHIS2_ORG_UNITS),
            ));
            continue;
        };
        let Some(t) = format::read_table(&f.name, &f.bytes, problems) else { continue };
        if !format::check_header(&t, spec, problems) {
            continue;
        }
        parse_table(spec, &t, &mut rows, problems);
    }
    rows
}

fn parse_table(spec: &FileSpec, t: &Table, rows: &mut Rows, problems: &mut Vec<Problem>) {
    let at = |rec: &Record<'_>| (rec.file.to_owned(), rec.line);
    match spec.name {
        n if n == format::FACILITIES.name => {
            for rec in t.records() {
                if let Some(r) = facility(&rec, problems) {
                    rows.facilities.push(located(at(&rec), r));
                } else if !rec.get("code").is_empty() {
                    rows.broken.facilities.insert(rec.get("code").to_owned());
                }
            }
        }
        n if n == format::STORAGE_UNITS.name => {
            for rec in t.records() {
                if let Some(r) = unit(&rec, problems) {
                    rows.units.push(located(at(&rec), r));
                } else {
                    rows.broken.units.insert((rec.get("facility_code").to_owned(), rec.get("name").to_owned()));
                }
            }
        }
        n if n == format::PRODUCTS.name => {
            for rec in t.records() {
                if let Some(r) = product(&rec, problems) {
                    rows.products.push(located(at(&rec), r));
                } else {
                    rows.broken.products.insert(rec.get("code").to_owned());
                }
            }
        }
        n if n == format::LOTS.name => {
            for rec in t.records() {
                if let Some(r) = lot(&rec, problems) {
                    rows.lots.push(located(at(&rec), r));
                } else {
                    rows.broken.lots.insert((rec.get("product_code").to_owned(), rec.get("lot_number").to_owned()));
                }
            }
        }
        n if n == format::OPENING_BALANCES.name => {
            for rec in t.records() {
                if let Some(r) = balance(&rec, problems) {
                    rows.balances.push(located(at(&rec), r));
                }
            }
        }
        n if n == format::POLICIES.name => {
            for rec in t.records() {
                if let Some(r) = policy(&rec, problems) {
                    rows.policies.push(located(at(&rec), r));
                }
            }
        }
        n if n == format::DEVICES.name => {
            rows.has_devices_file = true;
            for rec in t.records() {
                if let Some(r) = device(&rec, problems) {
                    rows.devices.push(located(at(&rec), r));
                } else {
                    rows.broken.devices.insert(rec.get("serial").to_owned());
                }
            }
        }
        n if n == format::PROBES.name => {
            for rec in t.records() {
                if let Some(r) = probe(&rec, problems) {
                    rows.probes.push(located(at(&rec), r));
                } else {
                    // A device with a bad probe row is not planned either; its other rows stay quiet.
                    rows.broken.devices.insert(rec.get("device_serial").to_owned());
                }
            }
        }
        _ => {
            for rec in t.records() {
                if let Some(r) = token(&rec, problems) {
                    rows.tokens.push(located(at(&rec), r));
                }
            }
        }
    }
}

fn located<T>((file, line): (String, u64), row: T) -> Located<T> {
    Located { file, line, row }
}

fn facility(rec: &Record<'_>, problems: &mut Vec<Problem>) -> Option<FacilityRow> {
    let mut c = Cells::new(rec, problems);
    let code = c.code("code");
    let parent = c.opt_code("parent_code");
    let kind = c.named::<FacilityKind>("kind");
    let name = c.text("name", 200);
    let gln = c.check("gln", validate::optional_gln("gln", c.raw("gln")).map_err(reason_of));
    let external_id = c.opt_text("external_id", 64);
    let latitude = c.opt_float("latitude", -90.0, 90.0);
    let longitude = c.opt_float("longitude", -180.0, 180.0);
    let active = c.boolean("active", true);
    if let (Some(k), Some(p)) = (kind, &parent) {
        match (k, p) {
            (FacilityKind::NationalStore, Some(_)) => c.report("parent_code", "the national store has no parent"),
            (k, None) if k != FacilityKind::NationalStore => {
                c.report("parent_code", "is required (only the national store has no parent)");
            }
            _ => {}
        }
    }
    if !c.ok {
        return None;
    }
    Some(FacilityRow {
        code: code?,
        parent: parent?.map_or(ParentRef::Root, ParentRef::Code),
        parent_column: "parent_code",
        kind_column: "kind",
        keyed_by_external_id: false,
        kind: kind?,
        name: name?,
        gln: gln?,
        external_id: external_id?,
        latitude: latitude?,
        longitude: longitude?,
        active: active?,
    })
}

fn unit(rec: &Record<'_>, problems: &mut Vec<Problem>) -> Option<UnitRow> {
    let mut c = Cells::new(rec, problems);
    let facility_code = c.code("facility_code");
    let name = c.text("name", 100);
    let kind = c.named::<StorageUnitKind>("kind");
    let profile = c.named::<TemperatureProfile>("temperature_profile");
    let capacity = c.opt_float("capacity_litres", 0.0, 1_000_000.0);
    let active = c.boolean("active", true);
    let (lo, hi) = (thresholds::MIN_TEMP_C, thresholds::MAX_TEMP_C);
    let range_low_c = c.opt_float("range_low_c", lo, hi);
    let range_high_c = c.opt_float("range_high_c", lo, hi);
    let heat_alarm_secs = c.opt_span("heat_alarm_after");
    let heat_critical_secs = c.opt_span("heat_critical_after");
    let freeze_threshold_c = c.opt_float("freeze_threshold_c", lo, hi);
    let freeze_alarm_secs = c.opt_span("freeze_alarm_after");
    let freeze_critical_secs = c.opt_span("freeze_critical_after");
    let no_data_secs = c.opt_span("no_data_after");
    let power_out_secs = c.opt_span("power_out_after");
    if !c.ok {
        return None;
    }
    let profile = profile?;
    let input = AlarmOverridesInput {
        range_low_c: range_low_c?,
        range_high_c: range_high_c?,
        heat_alarm_secs: heat_alarm_secs?,
        heat_critical_secs: heat_critical_secs?,
        freeze_threshold_c: freeze_threshold_c?,
        freeze_alarm_secs: freeze_alarm_secs?,
        freeze_critical_secs: freeze_critical_secs?,
        no_data_secs: no_data_secs?,
        power_out_secs: power_out_secs?,
    };
    // The same rules as the API, so a file cannot hold what CreateStorageUnit would refuse; the
    // error's field ends in the column name.
    let alarm_overrides = match AlarmOverrides::parse(&input).and_then(|o| o.check(profile).map(|()| o)) {
        Ok(o) => o,
        Err(e) => {
            let column = match &e {
                Error::InvalidArgument { field, .. } => field.rsplit('.').next().unwrap_or_default().to_owned(),
                _ => "temperature_profile".to_owned(),
            };
            c.report(&column, reason_of(e));
            return None;
        }
    };
    Some(UnitRow {
        facility_code: facility_code?,
        name: name?,
        kind: kind?,
        profile,
        capacity_litres: capacity?.unwrap_or(0.0),
        active: active?,
        alarm_overrides,
    })
}

/// Splits a list cell on `;` or whitespace.
fn list(v: &str) -> impl Iterator<Item = &str> {
    v.split(|c: char| c == ';' || c.is_whitespace()).filter(|s| !s.is_empty())
}

fn product(rec: &Record<'_>, problems: &mut Vec<Problem>) -> Option<ProductRow> {
    let mut c = Cells::new(rec, problems);
    let code = c.code("code");
    let name = c.text("name", 200);
    let vaccine = c.text("vaccine", 100);
    let doses = c.int("doses_per_vial", 1..=100, None);
    let presentation = c.named::<Presentation>("presentation");
    let vvm = c.named::<VvmType>("vvm_type");
    let profile = c.named::<TemperatureProfile>("temperature_profile");
    let wastage = c.int("acceptable_wastage_bp", 0..=10_000, Some(0));
    let mdvp = c.boolean("multi_dose_vial_policy", false);
    let active = c.boolean("active", true);
    let mut gtins: Vec<String> = Vec::new();
    let raw = c.raw("gtins");
    for g in list(raw) {
        match validate::gtin("gtins", g) {
            Ok(g) if !gtins.contains(&g) => gtins.push(g),
            Ok(_) => {}
            Err(e) => c.report("gtins", reason_of(e)),
        }
    }
    if gtins.len() > 20 {
        c.report("gtins", "at most 20 GTINs");
    }
    if !c.ok {
        return None;
    }
    let (doses, presentation) = (doses?, presentation?);
    let doses = i32::try_from(doses).ok()?;
    let bp = i32::try_from(wastage?).ok()?;
    Some(ProductRow {
        code: code?,
        name: name?,
        vaccine: vaccine?,
        doses_per_vial: doses,
        presentation,
        vvm_type: vvm?,
        profile: profile?,
        acceptable_wastage_bp: if bp == 0 { who_max_wastage_bp(doses, presentation) } else { bp },
        multi_dose_vial_policy: mdvp?,
        gtins,
        active: active?,
    })
}

fn lot(rec: &Record<'_>, problems: &mut Vec<Problem>) -> Option<LotRow> {
    let mut c = Cells::new(rec, problems);
    let product_code = c.code("product_code");
    let lot_number = c.text("lot_number", 20);
    if let Some(n) = &lot_number
        && !n.chars().all(|ch| ch.is_ascii_graphic())
    {
        c.report("lot_number", "must be printable ASCII without spaces (GS1 AI 10)");
    }
    let expiry = c.date("expiry");
    let raw = c.raw("gtin");
    let gtin = if raw.is_empty() {
        Some(String::new())
    } else {
        c.check("gtin", validate::gtin("gtin", raw).map_err(reason_of))
    };
    let manufacturer = c.opt_text("manufacturer", 200);
    if !c.ok {
        return None;
    }
    Some(LotRow {
        product_code: product_code?,
        lot_number: lot_number?,
        expiry: expiry?,
        gtin: gtin?,
        manufacturer: manufacturer?,
    })
}

fn balance(rec: &Record<'_>, problems: &mut Vec<Problem>) -> Option<BalanceRow> {
    let mut c = Cells::new(rec, problems);
    let facility_code = c.code("facility_code");
    let unit_name = c.text("unit_name", 100);
    let product_code = c.code("product_code");
    let lot_number = c.text("lot_number", 20);
    let vials = match c.raw("vials").parse::<i64>() {
        Ok(n) if n < 0 => {
            c.report("vials", format!("negative quantity {n}: an opening balance counts the vials on hand"));
            None
        }
        Ok(0) => {
            c.report("vials", "must be at least 1 (leave out lots the unit does not hold)");
            None
        }
        Ok(n) if n > 1_000_000_000 => {
            c.report("vials", "must be at most 1000000000");
            None
        }
        Ok(n) => Some(n),
        Err(_) if c.raw("vials").is_empty() => {
            c.report("vials", "is required");
            None
        }
        Err(_) => {
            let v = c.raw("vials");
            c.report("vials", format!("'{v}' is not a whole number of vials"));
            None
        }
    };
    if !c.ok {
        return None;
    }
    Some(BalanceRow {
        facility_code: facility_code?,
        unit_name: unit_name?,
        product_code: product_code?,
        lot_number: lot_number?,
        vials: vials?,
    })
}

fn policy(rec: &Record<'_>, problems: &mut Vec<Problem>) -> Option<PolicyRow> {
    let mut c = Cells::new(rec, problems);
    let facility_code = c.code("facility_code");
    let product_code = c.code("product_code");
    let min = c.int("min_doses", 0..=i64::from(i32::MAX), None);
    let max = c.int("max_doses", 0..=i64::from(i32::MAX), Some(0));
    if let (Some(min), Some(max)) = (min, max) {
        if max != 0 && min > max {
            c.report("min_doses", format!("{min} is above max_doses {max}"));
        } else if min == 0 && max == 0 {
            c.report("min_doses", "min_doses and max_doses are both 0: there is no policy to set");
        }
    }
    if !c.ok {
        return None;
    }
    Some(PolicyRow { facility_code: facility_code?, product_code: product_code?, min_doses: min?, max_doses: max? })
}

fn device(rec: &Record<'_>, problems: &mut Vec<Problem>) -> Option<DeviceRow> {
    let mut c = Cells::new(rec, problems);
    let serial = c.text("serial", 64);
    let facility_code = c.code("facility_code");
    let name = c.opt_text("name", 200);
    let model = c.opt_text("model", 200);
    let interval = c.int("expected_interval_secs", 60..=86_400, None);
    let unsigned = c.boolean("unsigned_allowed", false);
    let active = c.boolean("active", true);
    let raw = c.raw("key_hex");
    let key = if raw.is_empty() { Some(None) } else { c.check("key_hex", parse_key_hex(raw)).map(Some) };
    if !c.ok {
        return None;
    }
    Some(DeviceRow {
        serial: serial?,
        facility_code: facility_code?,
        name: name?,
        model: model?,
        expected_interval_secs: interval?,
        unsigned_allowed: unsigned?,
        active: active?,
        key: key?,
    })
}

fn probe(rec: &Record<'_>, problems: &mut Vec<Problem>) -> Option<ProbeRow> {
    let mut c = Cells::new(rec, problems);
    let device_serial = c.text("device_serial", 64);
    let index = c.int("probe", 0..=15, None);
    let unit_name = c.text("unit_name", 100);
    let label = c.opt_text("label", 100);
    if !c.ok {
        return None;
    }
    Some(ProbeRow {
        device_serial: device_serial?,
        probe: u32::try_from(index?).ok()?,
        unit_name: unit_name?,
        label: label?,
    })
}

fn token(rec: &Record<'_>, problems: &mut Vec<Problem>) -> Option<TokenRow> {
    let mut c = Cells::new(rec, problems);
    let role = c.named::<Role>("role");
    let scope = c.opt_code("scope_facility_code");
    let device = c.opt_text("device_serial", 64);
    let description = c.text("description", 200);
    if let (Some(role), Some(scope), Some(device)) = (role, &scope, &device) {
        if scope.is_none() && !role.may_be_unscoped() {
            c.report("scope_facility_code", format!("role {} needs a scope facility", role.name()));
        }
        match (role, device.is_empty()) {
            (Role::Device, true) => c.report("device_serial", "is required for device tokens"),
            (Role::Device, false) | (_, true) => {}
            (_, false) => c.report("device_serial", "only device tokens name a device"),
        }
    }
    if !c.ok {
        return None;
    }
    let device = device?;
    Some(TokenRow {
        role: role?,
        scope_code: scope?,
        device_serial: (!device.is_empty()).then_some(device),
        description: description?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(name: &str, text: &str) -> (Rows, Vec<Problem>) {
        let mut p = Vec::new();
        let rows = parse_files(
            &[SourceFile { name: name.into(), bytes: text.as_bytes().to_vec() }],
            &dhis2::LevelMap::default(),
            &mut p,
        );
        (rows, p)
    }

    #[test]
    fn every_bad_field_of_a_row_is_reported() {
        let (rows, p) =
            parse("facilities.csv", "code,parent_code,kind,name,gln,latitude\nbad code,,district,,0614141000006,91\n");
        assert!(rows.facilities.is_empty());
        let cols: Vec<&str> = p.iter().map(|p| p.column.as_str()).collect();
        assert_eq!(cols, vec!["code", "kind", "name", "gln", "latitude"], "{p:?}");
        assert!(p.iter().all(|p| p.line == 2));
    }

    #[test]
    fn dates_quantities_and_keys() {
        assert!(parse_date("2027-02-29").is_err());
        assert!(parse_date("27-02-01").is_err());
        assert!(parse_date("2027-2-1").is_err());
        assert!(parse_date("2028-02-29").is_ok());
        assert_eq!(parse_key_hex(&"ab".repeat(32)).map(|k| k.len()), Ok(32));
        assert!(parse_key_hex("abc").is_err());
        assert!(parse_key_hex(&"zz".repeat(32)).is_err());
        let (_, p) = parse(
            "opening_balances.csv",
            "facility_code,unit_name,product_code,lot_number,vials\nF,U,P,L,-5\nF,U,P,L,x\n",
        );
        assert!(p[0].reason.contains("negative quantity"), "{p:?}");
        assert!(p[1].reason.contains("whole number"), "{p:?}");
    }

    #[test]
    fn products_default_wastage_and_check_gtins() {
        let (rows, p) = parse(
            "products.csv",
            "code,name,vaccine,doses_per_vial,presentation,vvm_type,temperature_profile,gtins\n\
             MR10,MR,MR,10,lyophilised,vvm14,refrigerated,09506000000046;9506000000046\n\
             X,X,X,1,liquid,none,frozen,09506000000047\n",
        );
        assert_eq!(rows.products.len(), 1);
        assert_eq!(rows.products[0].row.acceptable_wastage_bp, 5000);
        assert_eq!(rows.products[0].row.gtins, vec!["09506000000046".to_owned()]);
        assert_eq!((p[0].line, p[0].column.as_str()), (3, "gtins"), "{p:?}");
        assert!(rows.broken.products.contains("X"));
    }

    #[test]
    fn units_take_alarm_overrides_checked_like_the_api() {
        assert_eq!(parse_span("45s"), Ok(45));
        assert_eq!(parse_span("90min"), Ok(5400));
        assert_eq!(parse_span("10 h"), Ok(36_000));
        assert!(parse_span("1.5h").is_err() && parse_span("-1h").is_err() && parse_span("60").is_err());
        assert_eq!(span_cell(5400), "90min");
        let header = "facility_code,name,kind,temperature_profile,range_high_c,heat_alarm_after,freeze_threshold_c";
        let (rows, problems) = parse(
            "storage_units.csv",
            &format!("{header}\nF,A,ilr,refrigerated,12,1h,\nF,B,ilr,refrigerated,1,90,3\n"),
        );
        let cols: Vec<(u64, &str)> = problems.iter().map(|p| (p.line, p.column.as_str())).collect();
        // Line 3: 90 has no unit; the temperatures are checked once the cells parse.
        assert_eq!(cols, vec![(3, "heat_alarm_after")], "{problems:?}");
        let a = &rows.units[0].row.alarm_overrides;
        assert_eq!((a.range_high_centi, a.heat_alarm_secs, a.freeze_threshold_centi), (Some(1200), Some(3600), None));
        assert_eq!(override_cells(a)[1..3], ["12".to_owned(), "1h".to_owned()]);
        let (_, problems) = parse("storage_units.csv", &format!("{header}\nF,B,ilr,refrigerated,1,1h,3\n"));
        let cols: Vec<&str> = problems.iter().map(|p| p.column.as_str()).collect();
        assert_eq!(cols, vec!["range_high_c"], "a high below the profile's low: {problems:?}");
    }

    #[test]
    fn unknown_files_are_problems() {
        let (_, p) = parse("facility.csv", "code\n");
        assert!(p[0].reason.contains("not an onboarding file"), "{p:?}");
    }

    #[test]
    fn token_rules() {
        let (rows, p) = parse(
            "tokens.csv",
            "role,scope_facility_code,device_serial,description\nadmin,,,ops\ndepot_manager,,,dm\nadmin,,D1,x\n",
        );
        assert_eq!(rows.tokens.len(), 1);
        let cols: Vec<&str> = p.iter().map(|p| p.column.as_str()).collect();
        assert_eq!(cols, vec!["scope_facility_code", "device_serial"]);
    }
}
