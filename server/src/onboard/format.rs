//! The file formats: which files exist, their columns, the names of enumerated values, and
//! reading a CSV file into located records.

use std::collections::HashMap;

use super::Problem;
use crate::domain::catalog::{Presentation, VvmType};
use crate::domain::{FacilityKind, Role, StorageUnitKind, TemperatureProfile};

/// A column of a file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Header name.
    pub name: &'static str,
    /// Whether the column must be present and non-empty in every row.
    pub required: bool,
}

const fn req(name: &'static str) -> Column {
    Column { name, required: true }
}

const fn opt(name: &'static str) -> Column {
    Column { name, required: false }
}

/// A file format: its file name and columns, in the order exports write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpec {
    /// File name.
    pub name: &'static str,
    /// Columns.
    pub columns: &'static [Column],
}

/// The facility tree.
pub const FACILITIES: FileSpec = FileSpec {
    name: "facilities.csv",
    columns: &[
        req("code"),
        opt("parent_code"),
        req("kind"),
        req("name"),
        opt("gln"),
        opt("external_id"),
        opt("latitude"),
        opt("longitude"),
        opt("active"),
    ],
};
/// Storage units (fridges, freezers, cold boxes) per facility.
pub const STORAGE_UNITS: FileSpec = FileSpec {
    name: "storage_units.csv",
    columns: &[
        req("facility_code"),
        req("name"),
        req("kind"),
        req("temperature_profile"),
        opt("capacity_litres"),
        opt("active"),
        // Alarm threshold overrides, named as in the API (domain::thresholds::FIELDS).
        opt("range_low_c"),
        opt("range_high_c"),
        opt("heat_alarm_after"),
        opt("heat_critical_after"),
        opt("freeze_threshold_c"),
        opt("freeze_alarm_after"),
        opt("freeze_critical_after"),
        opt("no_data_after"),
        opt("power_out_after"),
    ],
};
/// The vaccine catalogue.
pub const PRODUCTS: FileSpec = FileSpec {
    name: "products.csv",
    columns: &[
        req("code"),
        req("name"),
        req("vaccine"),
        req("doses_per_vial"),
        req("presentation"),
        req("vvm_type"),
        req("temperature_profile"),
        opt("acceptable_wastage_bp"),
        opt("multi_dose_vial_policy"),
        opt("gtins"),
        opt("active"),
    ],
};
/// Lots of products.
pub const LOTS: FileSpec = FileSpec {
    name: "lots.csv",
    columns: &[req("product_code"), req("lot_number"), req("expiry"), opt("gtin"), opt("manufacturer")],
};
/// Opening balances: vials of a lot in a storage unit on the day the country starts.
pub const OPENING_BALANCES: FileSpec = FileSpec {
    name: "opening_balances.csv",
    columns: &[req("facility_code"), req("unit_name"), req("product_code"), req("lot_number"), req("vials")],
};
/// Min/max stock policies per facility and product.
pub const POLICIES: FileSpec = FileSpec {
    name: "policies.csv",
    columns: &[req("facility_code"), req("product_code"), req("min_doses"), opt("max_doses")],
};
/// Temperature loggers.
pub const DEVICES: FileSpec = FileSpec {
    name: "devices.csv",
    columns: &[
        req("serial"),
        req("facility_code"),
        opt("name"),
        opt("model"),
        req("expected_interval_secs"),
        opt("unsigned_allowed"),
        opt("active"),
        opt("key_hex"),
    ],
};
/// The probes of the loggers, each bound to a storage unit of the logger's facility.
pub const PROBES: FileSpec =
    FileSpec { name: "probes.csv", columns: &[req("device_serial"), req("probe"), req("unit_name"), opt("label")] };
/// Access tokens to create.
pub const TOKENS: FileSpec = FileSpec {
    name: "tokens.csv",
    columns: &[req("role"), opt("scope_facility_code"), opt("device_serial"), req("description")],
};

/// Every vaxtrace format, in the order an import validates and writes them.
pub const FILES: &[FileSpec] =
    &[FACILITIES, STORAGE_UNITS, PRODUCTS, LOTS, OPENING_BALANCES, POLICIES, DEVICES, PROBES, TOKENS];

/// The DHIS2 organisation-unit export (`/api/organisationUnits.csv`); its columns are mapped, not fixed.
pub const DHIS2_ORG_UNITS: &str = "organisationUnits.csv";

/// Whether a file name is the DHIS2 organisation-unit export (either spelling, any case).
pub fn is_dhis2(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "organisationunits.csv" || n == "organizationunits.csv"
}

/// The position of a file in import order, for sorting reports (unknown files last).
pub fn file_rank(name: &str) -> usize {
    if is_dhis2(name) {
        return 0;
    }
    FILES.iter().position(|f| f.name == name).map_or(FILES.len() + 1, |i| i + 1)
}

/// Maps enumerated values to their CSV names and back.
pub trait Named: Sized + Copy + 'static {
    /// Every value with its name.
    const NAMES: &'static [(Self, &'static str)];
    /// What the column holds, for error messages.
    const WHAT: &'static str;

    /// The CSV name.
    fn csv_name(self) -> &'static str
    where
        Self: PartialEq,
    {
        Self::NAMES.iter().find(|(v, _)| *v == self).map_or("", |(_, n)| n)
    }

    /// Parses a name, case-insensitively; the error lists the accepted names.
    fn parse_name(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Self::NAMES.iter().find(|(_, n)| n.eq_ignore_ascii_case(s)).map(|(v, _)| *v).ok_or_else(|| {
            let names: Vec<&str> = Self::NAMES.iter().map(|(_, n)| *n).collect();
            format!("unknown {} '{s}'; use one of: {}", Self::WHAT, names.join(", "))
        })
    }
}

impl Named for FacilityKind {
    const NAMES: &'static [(Self, &'static str)] = &[
        (FacilityKind::NationalStore, "national_store"),
        (FacilityKind::StateStore, "state_store"),
        (FacilityKind::DistrictStore, "district_store"),
        (FacilityKind::ColdChainPoint, "cold_chain_point"),
        (FacilityKind::SessionSite, "session_site"),
    ];
    const WHAT: &'static str = "facility kind";
}

impl Named for StorageUnitKind {
    const NAMES: &'static [(Self, &'static str)] = &[
        (StorageUnitKind::Ilr, "ilr"),
        (StorageUnitKind::DeepFreezer, "deep_freezer"),
        (StorageUnitKind::WalkInCooler, "walk_in_cooler"),
        (StorageUnitKind::WalkInFreezer, "walk_in_freezer"),
        (StorageUnitKind::ColdBox, "cold_box"),
        (StorageUnitKind::VaccineCarrier, "vaccine_carrier"),
        (StorageUnitKind::SolarFridge, "solar_fridge"),
        (StorageUnitKind::UltraLowFreezer, "ultra_low_freezer"),
    ];
    const WHAT: &'static str = "storage unit kind";
}

impl Named for TemperatureProfile {
    const NAMES: &'static [(Self, &'static str)] = &[
        (TemperatureProfile::Refrigerated, "refrigerated"),
        (TemperatureProfile::Frozen, "frozen"),
        (TemperatureProfile::UltraLow, "ultra_low"),
    ];
    const WHAT: &'static str = "temperature profile";
}

impl Named for Presentation {
    const NAMES: &'static [(Self, &'static str)] =
        &[(Presentation::Liquid, "liquid"), (Presentation::Lyophilised, "lyophilised")];
    const WHAT: &'static str = "presentation";
}

impl Named for VvmType {
    const NAMES: &'static [(Self, &'static str)] = &[
        (VvmType::None, "none"),
        (VvmType::Vvm2, "vvm2"),
        (VvmType::Vvm7, "vvm7"),
        (VvmType::Vvm14, "vvm14"),
        (VvmType::Vvm30, "vvm30"),
        (VvmType::Vvm250, "vvm250"),
    ];
    const WHAT: &'static str = "VVM type";
}

impl Named for Role {
    const NAMES: &'static [(Self, &'static str)] = &[
        (Role::Admin, "admin"),
        (Role::NationalOfficer, "national_officer"),
        (Role::DistrictOfficer, "district_officer"),
        (Role::DepotManager, "depot_manager"),
        (Role::Device, "device"),
    ];
    const WHAT: &'static str = "role";
}

/// One data record of a file: its line and its fields by column.
#[derive(Debug, Clone)]
pub struct Record<'t> {
    /// File name.
    pub file: &'t str,
    /// 1-based line where the record starts.
    pub line: u64,
    columns: &'t HashMap<String, usize>,
    headers: &'t [String],
    fields: csv::StringRecord,
}

impl Record<'_> {
    /// The trimmed value of a column ("" when the column or the field is absent).
    pub fn get(&self, column: &str) -> &str {
        self.columns.get(column).and_then(|&i| self.fields.get(i)).map_or("", str::trim)
    }

    /// A problem located at this record and `column` (named as the header writes it).
    pub fn problem(&self, column: &str, reason: impl Into<String>) -> Problem {
        let written = self.columns.get(column).and_then(|&i| self.headers.get(i)).map_or(column, String::as_str);
        Problem::new(self.file, self.line, written, reason)
    }
}

/// A parsed CSV file: header positions and records.
#[derive(Debug, Clone)]
pub struct Table {
    /// File name.
    pub file: String,
    /// Lower-cased header name → field index.
    pub columns: HashMap<String, usize>,
    /// Header names as written.
    pub headers: Vec<String>,
    rows: Vec<(u64, csv::StringRecord)>,
}

impl Table {
    /// The records with their lines.
    pub fn records(&self) -> impl Iterator<Item = Record<'_>> {
        self.rows.iter().map(|(line, fields)| Record {
            file: &self.file,
            line: *line,
            columns: &self.columns,
            headers: &self.headers,
            fields: fields.clone(),
        })
    }

    /// Number of data records.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True without data records.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether the header has this column.
    pub fn has(&self, column: &str) -> bool {
        self.columns.contains_key(column)
    }
}

/// Reads CSV bytes into a table. Every record must have as many fields as the header. Syntax
/// problems are reported and end the file (what follows a broken quote cannot be trusted).
pub fn read_table(file: &str, bytes: &[u8], problems: &mut Vec<Problem>) -> Option<Table> {
    // Spreadsheets on Windows save UTF-8 with a byte-order mark.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(bytes);
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(|s| s.trim().to_owned()).collect(),
        Err(e) => {
            problems.push(Problem::new(file, 1, "", format!("cannot read the header: {}", csv_reason(&e))));
            return None;
        }
    };
    if headers.iter().all(String::is_empty) {
        problems.push(Problem::new(file, 1, "", "the file is empty; the first line must be the header"));
        return None;
    }
    let mut columns = HashMap::new();
    for (i, h) in headers.iter().enumerate() {
        if columns.insert(h.to_ascii_lowercase(), i).is_some() {
            problems.push(Problem::new(file, 1, h, "the column appears twice in the header"));
        }
    }
    let mut rows = Vec::new();
    for r in reader.records() {
        match r {
            Ok(rec) => {
                let line = rec.position().map_or(0, csv::Position::line);
                // A line of only commas is a spreadsheet's idea of an empty row.
                if rec.iter().all(|f| f.trim().is_empty()) {
                    continue;
                }
                // No field of these formats holds a line break: one here is a quote left open,
                // which swallowed the lines after it.
                if let Some(i) = rec.iter().position(|f| f.contains('\n')) {
                    let column = headers.get(i).map_or("", String::as_str);
                    let reason = "the field runs over several lines: is a closing quote (\") missing?";
                    problems.push(Problem::new(file, line, column, reason));
                    continue;
                }
                rows.push((line, rec));
            }
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                problems.push(Problem::new(file, line, "", csv_reason(&e)));
                return None;
            }
        }
    }
    Some(Table { file: file.to_owned(), columns, headers, rows })
}

/// Checks a table's header against a fixed format: required columns present, no unknown ones.
pub fn check_header(table: &Table, spec: &FileSpec, problems: &mut Vec<Problem>) -> bool {
    let before = problems.len();
    for c in spec.columns.iter().filter(|c| c.required) {
        if !table.has(c.name) {
            problems.push(Problem::new(&table.file, 1, c.name, "required column is missing from the header"));
        }
    }
    for h in &table.headers {
        if !spec.columns.iter().any(|c| c.name.eq_ignore_ascii_case(h)) {
            let names: Vec<&str> = spec.columns.iter().map(|c| c.name).collect();
            problems.push(Problem::new(
                &table.file,
                1,
                h,
                format!("unknown column; {} has: {}", spec.name, names.join(", ")),
            ));
        }
    }
    problems.len() == before
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("the row has {len} fields; the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "the text is not valid UTF-8 (save the file as CSV UTF-8)".to_owned(),
        _ => format!("unreadable CSV: {e}"),
    }
}

/// Writes rows under a header as CSV bytes (quoting as RFC 4180 needs).
pub fn write_csv(columns: &[Column], rows: impl IntoIterator<Item = Vec<String>>) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    // Writing into a Vec cannot fail.
    let _ = w.write_record(columns.iter().map(|c| c.name));
    for r in rows {
        let _ = w.write_record(&r);
    }
    w.into_inner().unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_errors_list_choices() {
        for (v, n) in FacilityKind::NAMES {
            assert_eq!(FacilityKind::parse_name(n), Ok(*v));
            assert_eq!(v.csv_name(), *n);
        }
        assert_eq!(FacilityKind::parse_name("District_Store"), Ok(FacilityKind::DistrictStore));
        let e = StorageUnitKind::parse_name("fridge").expect_err("not a kind");
        assert!(e.contains("ilr") && e.contains("fridge"), "{e}");
    }

    #[test]
    fn tables_locate_records_and_report_syntax() {
        let mut p = Vec::new();
        let t = read_table("f.csv", b"\xEF\xBB\xBFcode,name\nA,x\n\n,\n\"B\",\"y, z\"\n", &mut p).unwrap();
        assert!(p.is_empty(), "{p:?}");
        let recs: Vec<_> = t.records().map(|r| (r.line, r.get("code").to_owned(), r.get("name").to_owned())).collect();
        assert_eq!(recs, vec![(2, "A".into(), "x".into()), (5, "B".into(), "y, z".into())]);
        let open = read_table("f.csv", b"code,name\nA,\"x\nB,y\n", &mut p).unwrap();
        assert!(open.is_empty());
        assert_eq!((p[0].line, p[0].column.as_str()), (2, "name"), "{p:?}");
        p.clear();
        let none = read_table("f.csv", b"code,name\nA,x\nB\n", &mut p);
        assert!(none.is_none());
        assert_eq!(p[0].line, 3, "{p:?}");
        assert!(p[0].reason.contains("1 fields"), "{p:?}");
    }

    #[test]
    fn headers_are_checked() {
        let mut p = Vec::new();
        let t = read_table("lots.csv", b"product_code,lot,expiry\n", &mut p).unwrap();
        assert!(!check_header(&t, &LOTS, &mut p));
        let cols: Vec<&str> = p.iter().map(|p| p.column.as_str()).collect();
        assert_eq!(cols, vec!["lot_number", "lot"]);
    }

    #[test]
    fn templates_and_documentation_match_the_formats() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../onboarding");
        let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
        for spec in FILES {
            let template = std::fs::read_to_string(format!("{root}/templates/{}", spec.name)).unwrap();
            let header: Vec<&str> = spec.columns.iter().map(|c| c.name).collect();
            assert_eq!(template, format!("{}\n", header.join(",")), "templates/{}", spec.name);
            let section = readme
                .split(&format!("## {}", spec.name))
                .nth(1)
                .unwrap_or_else(|| readme.split(&format!("{}:\n", spec.name)).nth(1).unwrap_or_default());
            for c in spec.columns {
                let line = section.lines().find(|l| l.starts_with(&format!("| `{}` |", c.name)));
                let line = line.unwrap_or_else(|| panic!("README documents {} of {}", c.name, spec.name));
                // The second cell says whether the column is required: "yes" exactly when it is.
                let cell = line.split('|').nth(2).unwrap_or_default().trim();
                assert_eq!(cell == "yes", c.required, "README: {} of {}: '{cell}'", c.name, spec.name);
            }
        }
    }

    #[test]
    fn written_csv_quotes_when_needed() {
        let out = write_csv(&LOTS.columns[..2], vec![vec!["P".into(), "a,b".into()]]);
        assert_eq!(String::from_utf8(out).unwrap(), "product_code,lot_number\nP,\"a,b\"\n");
    }
}
