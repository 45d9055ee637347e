//! From parsed rows and a snapshot of the database to an [`ImportPlan`]: every cross-row and
//! cross-file rule (unknown references, duplicates, cycles, the tree's kind order, one opening
//! balance per unit and lot, …) and the idempotency rules. Rows are keyed by natural keys; a row
//! already in the database with the same values is skipped, with other values it is a problem
//! (an import never overwrites).

use std::collections::{HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};

use super::format::Named;
use super::rows::{Located, ParentRef, Rows, hex, override_cells, reason_of};
use super::{ACTOR, IssuedSecret, OPENING_BALANCE_REQUEST_ID, Problem, dhis2};
use crate::domain::stock::{EntryDraft, EntryKind, LotInfo, Operation, StockPolicy};
use crate::domain::telemetry::{Device, Probe};
use crate::domain::thresholds;
use crate::domain::{
    Facility, FacilityKind, Lot, NewToken, Product, Role, StorageUnit, TemperatureProfile, Token, new_id, token,
};

/// A balance of a lot in a storage unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceLine {
    /// Storage unit id.
    pub storage_unit_id: String,
    /// Lot id.
    pub lot_id: String,
    /// Vials.
    pub vials: i64,
}

/// What the database holds, as far as onboarding is concerned.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every facility.
    pub facilities: Vec<Facility>,
    /// Every storage unit.
    pub units: Vec<StorageUnit>,
    /// Every product.
    pub products: Vec<Product>,
    /// Every lot.
    pub lots: Vec<Lot>,
    /// Non-zero balances (vials on hand, quarantined included).
    pub balances: Vec<BalanceLine>,
    /// Opening balances already booked by an import, summed per unit and lot.
    pub opening: Vec<BalanceLine>,
    /// Every min/max policy.
    pub policies: Vec<StockPolicy>,
    /// Every device with its probes.
    pub devices: Vec<Device>,
    /// HMAC keys by device id.
    pub device_keys: HashMap<String, Vec<u8>>,
    /// Tokens not revoked.
    pub tokens: Vec<Token>,
}

/// How to read the input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// DHIS2 level → facility kind.
    pub levels: dhis2::LevelMap,
}

/// Everything an import writes, ids assigned, in an order the foreign keys accept.
#[derive(Debug, Clone, Default)]
pub struct ImportPlan {
    /// New facilities, parents before children.
    pub facilities: Vec<Facility>,
    /// New storage units.
    pub units: Vec<StorageUnit>,
    /// New products.
    pub products: Vec<Product>,
    /// New lots.
    pub lots: Vec<Lot>,
    /// Opening balances as RECEIPT entries of one operation.
    pub opening: Option<Operation>,
    /// New policies.
    pub policies: Vec<StockPolicy>,
    /// New devices with their HMAC keys.
    pub devices: Vec<(Device, Vec<u8>)>,
    /// New tokens with their secrets' hashes.
    pub tokens: Vec<(Token, Vec<u8>)>,
}

impl ImportPlan {
    /// Rows to write (probes and GTINs counted with their device and product).
    pub fn rows(&self) -> usize {
        self.facilities.len()
            + self.units.len()
            + self.products.len()
            + self.lots.len()
            + self.opening.as_ref().map_or(0, |o| o.drafts.len())
            + self.policies.len()
            + self.devices.len()
            + self.tokens.len()
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.rows() == 0
    }
}

/// New and already-present rows of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Rows the import creates.
    pub new: usize,
    /// Rows already in the database with the same values (skipped).
    pub unchanged: usize,
}

/// What an import did (or would do) per kind of row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Facilities.
    pub facilities: Count,
    /// Storage units.
    pub units: Count,
    /// Products.
    pub products: Count,
    /// Lots.
    pub lots: Count,
    /// Opening balances.
    pub balances: Count,
    /// Policies.
    pub policies: Count,
    /// Devices (with their probes).
    pub devices: Count,
    /// Tokens.
    pub tokens: Count,
}

impl ImportSummary {
    /// (label, count) per kind, in import order.
    pub fn lines(&self) -> [(&'static str, Count); 8] {
        [
            ("facilities", self.facilities),
            ("storage units", self.units),
            ("products", self.products),
            ("lots", self.lots),
            ("opening balances", self.balances),
            ("policies", self.policies),
            ("devices", self.devices),
            ("tokens", self.tokens),
        ]
    }

    /// Rows created.
    pub fn new_rows(&self) -> usize {
        self.lines().iter().map(|(_, c)| c.new).sum()
    }
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (label, c) in self.lines() {
            writeln!(f, "  {label:<17} {:>7} new {:>7} unchanged", c.new, c.unchanged)?;
        }
        Ok(())
    }
}

/// The result of planning: the plan, its summary, the secrets it will create, and the problems.
#[derive(Debug, Clone, Default)]
pub struct Planned {
    /// What to write (meaningless when there are problems).
    pub plan: ImportPlan,
    /// Counts.
    pub summary: ImportSummary,
    /// Secrets to show once after the write.
    pub secrets: Vec<IssuedSecret>,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

/// A facility known by code: in the database or planned.
#[derive(Debug, Clone)]
struct Fac {
    id: String,
}

/// A storage unit known by (facility code, name).
#[derive(Debug, Clone)]
struct Unit {
    id: String,
    facility_id: String,
    profile: TemperatureProfile,
}

/// A product known by code.
#[derive(Debug, Clone)]
struct Prod {
    id: String,
    doses_per_vial: i32,
    profile: TemperatureProfile,
    gtins: Vec<String>,
    name: String,
}

/// Collects "database vs file" differences of a row that already exists.
#[derive(Debug, Default)]
struct Diff {
    first: Option<&'static str>,
    parts: Vec<String>,
}

impl Diff {
    fn check(&mut self, column: &'static str, db: impl fmt::Display, file: impl fmt::Display) {
        let (db, file) = (db.to_string(), file.to_string());
        if db != file {
            self.first.get_or_insert(column);
            self.parts.push(format!("{column} is '{db}' in the database, '{file}' in the file"));
        }
    }

    /// The problem for a row whose key exists with other values; `None` when identical.
    fn problem<T>(self, at: &Located<T>, what: String) -> Option<Problem> {
        let column = self.first?;
        Some(at.problem(
            column,
            format!(
                "{what} already exists with other values ({}); an import never overwrites: change it through \
                 the API or make the file match",
                self.parts.join("; ")
            ),
        ))
    }
}

fn opt_f64(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

fn sorted(v: &[String]) -> String {
    let mut v = v.to_vec();
    v.sort();
    v.join(";")
}

/// Plans an import of `rows` into a database holding `snap`; ids and timestamps are new.
pub fn build(rows: &Rows, snap: &Snapshot, now: DateTime<Utc>) -> Planned {
    let mut b = Builder::new(rows, snap, now);
    b.facilities();
    b.units();
    b.products();
    b.lots();
    b.balances();
    b.policies();
    b.devices();
    b.tokens();
    super::sort_problems(&mut b.out.problems);
    b.out
}

struct Builder<'a> {
    rows: &'a Rows,
    snap: &'a Snapshot,
    now: DateTime<Utc>,
    out: Planned,
    fac: HashMap<String, Fac>,
    fac_code_by_id: HashMap<&'a str, &'a str>,
    bad_fac: HashSet<String>,
    unit: HashMap<(String, String), Unit>,
    bad_unit: HashSet<(String, String)>,
    prod: HashMap<String, Prod>,
    bad_prod: HashSet<String>,
    lot: HashMap<(String, String), (LotInfo, String)>,
    bad_lot: HashSet<(String, String)>,
    device: HashMap<String, String>,
}

impl<'a> Builder<'a> {
    fn new(rows: &'a Rows, snap: &'a Snapshot, now: DateTime<Utc>) -> Self {
        let fac_code_by_id: HashMap<&str, &str> =
            snap.facilities.iter().map(|f| (f.id.as_str(), f.code.as_str())).collect();
        let fac = snap.facilities.iter().map(|f| (f.code.clone(), Fac { id: f.id.clone() })).collect();
        let unit = snap
            .units
            .iter()
            .filter_map(|u| {
                let code = fac_code_by_id.get(u.facility_id.as_str())?;
                let info =
                    Unit { id: u.id.clone(), facility_id: u.facility_id.clone(), profile: u.temperature_profile };
                Some((((*code).to_owned(), u.name.clone()), info))
            })
            .collect();
        let prod = snap
            .products
            .iter()
            .map(|p| {
                let info = Prod {
                    id: p.id.clone(),
                    doses_per_vial: p.doses_per_vial,
                    profile: p.temperature_profile,
                    gtins: p.gtins.clone(),
                    name: p.name.clone(),
                };
                (p.code.clone(), info)
            })
            .collect();
        let prod_by_id: HashMap<&str, &Product> = snap.products.iter().map(|p| (p.id.as_str(), p)).collect();
        let lot = snap
            .lots
            .iter()
            .filter_map(|l| {
                let p = prod_by_id.get(l.product_id.as_str())?;
                let info = LotInfo {
                    lot_id: l.id.clone(),
                    product_id: p.id.clone(),
                    doses_per_vial: i64::from(p.doses_per_vial),
                    expiry: l.expiry,
                };
                Some(((p.code.clone(), l.lot_number.clone()), (info, p.code.clone())))
            })
            .collect();
        let device = snap.devices.iter().map(|d| (d.serial.clone(), d.id.clone())).collect();
        Builder {
            rows,
            snap,
            now,
            out: Planned::default(),
            fac,
            fac_code_by_id,
            bad_fac: rows.broken.facilities.clone(),
            unit,
            bad_unit: rows.broken.units.clone(),
            prod,
            bad_prod: rows.broken.products.clone(),
            lot,
            bad_lot: rows.broken.lots.clone(),
            device,
        }
    }

    fn problem(&mut self, p: Problem) {
        self.out.problems.push(p);
    }

    /// The facility of a code, `None` when unknown (reported at `column`) or invalid (quiet).
    fn facility_ref<T>(&mut self, at: &Located<T>, column: &str, code: &str) -> Option<Fac> {
        if let Some(f) = self.fac.get(code) {
            return Some(f.clone());
        }
        if !self.bad_fac.contains(code) {
            self.problem(
                at.problem(column, format!("unknown facility '{code}': not in this import nor in the database")),
            );
        }
        None
    }

    fn product_ref<T>(&mut self, at: &Located<T>, column: &str, code: &str) -> Option<Prod> {
        if let Some(p) = self.prod.get(code) {
            return Some(p.clone());
        }
        if !self.bad_prod.contains(code) {
            self.problem(
                at.problem(column, format!("unknown product '{code}': not in this import nor in the database")),
            );
        }
        None
    }

    fn unit_ref<T>(&mut self, at: &Located<T>, facility_code: &str, name: &str) -> Option<Unit> {
        let key = (facility_code.to_owned(), name.to_owned());
        if let Some(u) = self.unit.get(&key) {
            return Some(u.clone());
        }
        if self.bad_unit.contains(&key) || self.bad_fac.contains(facility_code) {
            return None;
        }
        let (column, reason) = if self.fac.contains_key(facility_code) {
            ("unit_name", format!("unknown storage unit '{name}' at facility '{facility_code}'"))
        } else {
            ("facility_code", format!("unknown facility '{facility_code}': not in this import nor in the database"))
        };
        self.problem(at.problem(column, reason));
        None
    }

    fn facilities(&mut self) {
        let rows = &self.rows.facilities;
        let by_code: HashMap<&str, &Facility> = self.snap.facilities.iter().map(|f| (f.code.as_str(), f)).collect();
        let by_id: HashMap<&str, &Facility> = self.snap.facilities.iter().map(|f| (f.id.as_str(), f)).collect();
        let by_ext: HashMap<&str, &Facility> = self
            .snap
            .facilities
            .iter()
            .filter(|f| !f.external_id.is_empty())
            .map(|f| (f.external_id.as_str(), f))
            .collect();
        let mut seen: HashMap<&str, u64> = HashMap::new();
        // Rows not yet in the database, and their index by code.
        let mut fresh: Vec<usize> = Vec::new();
        let mut fresh_by_code: HashMap<&str, usize> = HashMap::new();
        for (i, at) in rows.iter().enumerate() {
            let r = &at.row;
            if let Some(first) = seen.get(r.code.as_str()) {
                self.problem(at.problem("code", format!("duplicate code '{}' (first on line {first})", r.code)));
                continue;
            }
            seen.insert(&r.code, at.line);
            let by_uid = if r.keyed_by_external_id { by_ext.get(r.external_id.as_str()) } else { None };
            if let Some(f) = by_uid.or_else(|| by_code.get(r.code.as_str())) {
                let mut d = Diff::default();
                let db_parent = match (&r.parent, f.parent_id.as_deref()) {
                    (ParentRef::ExternalId(_), Some(pid)) => by_id.get(pid).map(|p| p.external_id.clone()),
                    (_, Some(pid)) => self.fac_code_by_id.get(pid).map(|c| (*c).to_owned()),
                    (_, None) => None,
                };
                let file_parent = match &r.parent {
                    ParentRef::Root => String::new(),
                    ParentRef::Code(c) | ParentRef::ExternalId(c) => c.clone(),
                };
                d.check("code", &f.code, &r.code);
                d.check(r.parent_column, db_parent.unwrap_or_default(), file_parent);
                d.check(r.kind_column, f.kind.csv_name(), r.kind.csv_name());
                d.check("name", &f.name, &r.name);
                d.check("gln", &f.gln, &r.gln);
                d.check("external_id", &f.external_id, &r.external_id);
                d.check("latitude", opt_f64(f.latitude), opt_f64(r.latitude));
                d.check("longitude", opt_f64(f.longitude), opt_f64(r.longitude));
                d.check("active", f.active, r.active);
                match d.problem(at, format!("facility '{}'", r.code)) {
                    Some(p) => self.problem(p),
                    None => self.out.summary.facilities.unchanged += 1,
                }
                continue;
            }
            fresh_by_code.insert(&r.code, fresh.len());
            fresh.push(i);
        }

        #[derive(Clone, Copy)]
        enum Parent<'f> {
            Root,
            Fresh(usize),
            Db(&'f Facility),
            Bad,
        }
        let mut parents = Vec::with_capacity(fresh.len());
        for &i in &fresh {
            let at = &rows[i];
            let p = match &at.row.parent {
                ParentRef::Root => Parent::Root,
                ParentRef::Code(c) => match (fresh_by_code.get(c.as_str()), by_code.get(c.as_str())) {
                    (Some(&j), _) => Parent::Fresh(j),
                    (None, Some(f)) => Parent::Db(f),
                    (None, None) => {
                        if !self.bad_fac.contains(c) {
                            let reason =
                                format!("unknown parent facility '{c}': not in this import nor in the database");
                            self.problem(at.problem(at.row.parent_column, reason));
                        }
                        Parent::Bad
                    }
                },
                ParentRef::ExternalId(x) => match by_ext.get(x.as_str()) {
                    Some(f) => Parent::Db(f),
                    None => {
                        let reason = format!("unknown parent uid '{x}': not in this file nor in the database");
                        self.problem(at.problem(at.row.parent_column, reason));
                        Parent::Bad
                    }
                },
            };
            parents.push(p);
        }

        // Walk each row up to a known place (or a cycle), then settle the walk from the top down.
        const NEW: u8 = 0;
        const WALKING: u8 = 1;
        const OK: u8 = 2;
        const BAD: u8 = 3;
        let mut state = vec![NEW; fresh.len()];
        let mut path: Vec<String> = vec![String::new(); fresh.len()];
        let ids: Vec<String> = (0..fresh.len()).map(|_| new_id()).collect();
        let mut national = self.snap.facilities.iter().find(|f| f.kind == FacilityKind::NationalStore).map(|f| {
            (f.code.clone(), 0u64) // line 0: in the database
        });
        for start in 0..fresh.len() {
            let mut stack = Vec::new();
            let mut cur = start;
            loop {
                match state[cur] {
                    OK | BAD => break,
                    WALKING => {
                        let pos = stack.iter().position(|&k| k == cur).unwrap_or(0);
                        let cycle: Vec<usize> = stack[pos..].to_vec();
                        let mut names: Vec<&str> = cycle.iter().map(|&k| rows[fresh[k]].row.code.as_str()).collect();
                        names.push(rows[fresh[cycle[0]]].row.code.as_str());
                        let text = format!("cycle in the tree: {}", names.join(" → "));
                        for &k in &cycle {
                            let at = &rows[fresh[k]];
                            self.out.problems.push(at.problem(at.row.parent_column, text.clone()));
                            state[k] = BAD;
                        }
                        break;
                    }
                    _ => {}
                }
                state[cur] = WALKING;
                stack.push(cur);
                match parents[cur] {
                    Parent::Fresh(j) => cur = j,
                    _ => break,
                }
            }
            for &k in stack.iter().rev() {
                if state[k] == BAD {
                    continue;
                }
                let at = &rows[fresh[k]];
                let r = &at.row;
                let placed: Option<(String, FacilityKind, String)> = match parents[k] {
                    Parent::Root => Some((String::from("/"), r.kind, String::new())),
                    Parent::Db(f) => Some((f.path.clone(), f.kind, f.code.clone())),
                    Parent::Fresh(j) if state[j] == OK => {
                        Some((path[j].clone(), rows[fresh[j]].row.kind, rows[fresh[j]].row.code.clone()))
                    }
                    Parent::Fresh(_) | Parent::Bad => None,
                };
                let Some((parent_path, parent_kind, parent_code)) = placed else {
                    state[k] = BAD;
                    continue;
                };
                let hint = if r.kind_column == "level" { " (map DHIS2 levels with --dhis2-levels)" } else { "" };
                let is_root = matches!(parents[k], Parent::Root);
                let bad_place = match (is_root, r.kind) {
                    (true, FacilityKind::NationalStore) => match &national {
                        Some((code, line)) => Some((
                            r.kind_column,
                            if *line == 0 {
                                format!("a national store already exists in the database ('{code}'){hint}")
                            } else {
                                format!("a second national store ('{code}' is on line {line}){hint}")
                            },
                        )),
                        None => {
                            national = Some((r.code.clone(), at.line));
                            None
                        }
                    },
                    (true, k) => Some((
                        r.parent_column,
                        format!("a {} needs a parent (only the national store is the root){hint}", k.csv_name()),
                    )),
                    (false, FacilityKind::NationalStore) => {
                        Some((r.kind_column, format!("the national store cannot have a parent{hint}")))
                    }
                    (false, k) if parent_kind.as_i32() >= k.as_i32() => Some((
                        r.kind_column,
                        format!(
                            "a {} cannot be placed under a {} ('{parent_code}'){hint}",
                            k.csv_name(),
                            parent_kind.csv_name()
                        ),
                    )),
                    _ => None,
                };
                if let Some((column, reason)) = bad_place {
                    self.out.problems.push(at.problem(column, reason));
                    state[k] = BAD;
                    continue;
                }
                path[k] = format!("{parent_path}{}/", ids[k]);
                state[k] = OK;
            }
        }

        let mut planned: Vec<(usize, Facility)> = Vec::new();
        for (k, &i) in fresh.iter().enumerate() {
            let r = &rows[i].row;
            if state[k] != OK {
                self.bad_fac.insert(r.code.clone());
                continue;
            }
            let parent_id = match parents[k] {
                Parent::Db(f) => Some(f.id.clone()),
                Parent::Fresh(j) => Some(ids[j].clone()),
                Parent::Root | Parent::Bad => None,
            };
            let depth = path[k].matches('/').count();
            let f = Facility {
                id: ids[k].clone(),
                parent_id,
                kind: r.kind,
                code: r.code.clone(),
                name: r.name.clone(),
                gln: r.gln.clone(),
                external_id: r.external_id.clone(),
                latitude: r.latitude,
                longitude: r.longitude,
                active: r.active,
                path: path[k].clone(),
                created_at: self.now,
                updated_at: self.now,
            };
            self.fac.insert(f.code.clone(), Fac { id: f.id.clone() });
            planned.push((depth, f));
        }
        // Parents first: the foreign key on parent_id is checked as rows arrive.
        planned.sort_by_key(|(depth, _)| *depth);
        self.out.summary.facilities.new = planned.len();
        self.out.plan.facilities = planned.into_iter().map(|(_, f)| f).collect();
    }

    fn units(&mut self) {
        let db: HashMap<(&str, &str), &StorageUnit> =
            self.snap.units.iter().map(|u| ((u.facility_id.as_str(), u.name.as_str()), u)).collect();
        let mut seen: HashMap<(String, String), u64> = HashMap::new();
        for at in &self.rows.units {
            let r = &at.row;
            let key = (r.facility_code.clone(), r.name.clone());
            if let Some(first) = seen.get(&key) {
                let reason = format!(
                    "duplicate storage unit '{}' at facility '{}' (first on line {first})",
                    r.name, r.facility_code
                );
                self.problem(at.problem("name", reason));
                continue;
            }
            seen.insert(key.clone(), at.line);
            let Some(f) = self.facility_ref(at, "facility_code", &r.facility_code) else {
                self.bad_unit.insert(key);
                continue;
            };
            if let Some(u) = db.get(&(f.id.as_str(), r.name.as_str())) {
                let mut d = Diff::default();
                d.check("kind", u.kind.csv_name(), r.kind.csv_name());
                d.check("temperature_profile", u.temperature_profile.csv_name(), r.profile.csv_name());
                d.check("capacity_litres", u.capacity_litres, r.capacity_litres);
                d.check("active", u.active, r.active);
                let (db, file) = (override_cells(&u.alarm_overrides), override_cells(&r.alarm_overrides));
                for ((column, db), file) in thresholds::FIELDS.into_iter().zip(db).zip(file) {
                    d.check(column, db, file);
                }
                match d.problem(at, format!("storage unit '{}' at '{}'", r.name, r.facility_code)) {
                    Some(p) => {
                        self.problem(p);
                    }
                    None => self.out.summary.units.unchanged += 1,
                }
                continue;
            }
            let u = StorageUnit {
                id: new_id(),
                facility_id: f.id.clone(),
                kind: r.kind,
                name: r.name.clone(),
                temperature_profile: r.profile,
                capacity_litres: r.capacity_litres,
                active: r.active,
                alarm_overrides: r.alarm_overrides,
                created_at: self.now,
                updated_at: self.now,
            };
            self.unit.insert(key, Unit { id: u.id.clone(), facility_id: f.id, profile: u.temperature_profile });
            self.out.plan.units.push(u);
        }
        self.out.summary.units.new = self.out.plan.units.len();
    }

    fn products(&mut self) {
        let db: HashMap<&str, &Product> = self.snap.products.iter().map(|p| (p.code.as_str(), p)).collect();
        let mut owner: HashMap<String, String> = HashMap::new();
        for p in &self.snap.products {
            for g in &p.gtins {
                owner.insert(g.clone(), p.code.clone());
            }
        }
        let mut seen: HashMap<&str, u64> = HashMap::new();
        for at in &self.rows.products {
            let r = &at.row;
            if let Some(first) = seen.get(r.code.as_str()) {
                self.problem(at.problem("code", format!("duplicate code '{}' (first on line {first})", r.code)));
                continue;
            }
            seen.insert(&r.code, at.line);
            if let Some(p) = db.get(r.code.as_str()) {
                let mut d = Diff::default();
                d.check("name", &p.name, &r.name);
                d.check("vaccine", &p.vaccine, &r.vaccine);
                d.check("doses_per_vial", p.doses_per_vial, r.doses_per_vial);
                d.check("presentation", p.presentation.csv_name(), r.presentation.csv_name());
                d.check("vvm_type", p.vvm_type.csv_name(), r.vvm_type.csv_name());
                d.check("temperature_profile", p.temperature_profile.csv_name(), r.profile.csv_name());
                d.check("acceptable_wastage_bp", p.acceptable_wastage_bp, r.acceptable_wastage_bp);
                d.check("multi_dose_vial_policy", p.multi_dose_vial_policy, r.multi_dose_vial_policy);
                d.check("gtins", sorted(&p.gtins), sorted(&r.gtins));
                d.check("active", p.active, r.active);
                match d.problem(at, format!("product '{}'", r.code)) {
                    Some(p) => self.problem(p),
                    None => self.out.summary.products.unchanged += 1,
                }
                continue;
            }
            let mut taken = false;
            for g in &r.gtins {
                match owner.get(g) {
                    Some(o) if *o != r.code => {
                        let reason = format!("GTIN {g} already belongs to product '{o}'");
                        self.out.problems.push(at.problem("gtins", reason));
                        taken = true;
                    }
                    _ => {}
                }
            }
            if taken {
                self.bad_prod.insert(r.code.clone());
                continue;
            }
            for g in &r.gtins {
                owner.insert(g.clone(), r.code.clone());
            }
            let p = Product {
                id: new_id(),
                code: r.code.clone(),
                name: r.name.clone(),
                vaccine: r.vaccine.clone(),
                doses_per_vial: r.doses_per_vial,
                presentation: r.presentation,
                vvm_type: r.vvm_type,
                temperature_profile: r.profile,
                acceptable_wastage_bp: r.acceptable_wastage_bp,
                multi_dose_vial_policy: r.multi_dose_vial_policy,
                gtins: r.gtins.clone(),
                active: r.active,
                created_at: self.now,
                updated_at: self.now,
            };
            let info = Prod {
                id: p.id.clone(),
                doses_per_vial: p.doses_per_vial,
                profile: p.temperature_profile,
                gtins: p.gtins.clone(),
                name: p.name.clone(),
            };
            self.prod.insert(p.code.clone(), info);
            self.out.plan.products.push(p);
        }
        self.out.summary.products.new = self.out.plan.products.len();
    }

    fn lots(&mut self) {
        let db: HashMap<(&str, &str), &Lot> =
            self.snap.lots.iter().map(|l| ((l.product_id.as_str(), l.lot_number.as_str()), l)).collect();
        let mut seen: HashMap<(String, String), u64> = HashMap::new();
        for at in &self.rows.lots {
            let r = &at.row;
            let key = (r.product_code.clone(), r.lot_number.clone());
            if let Some(first) = seen.get(&key) {
                let reason =
                    format!("duplicate lot '{}' of product '{}' (first on line {first})", r.lot_number, r.product_code);
                self.problem(at.problem("lot_number", reason));
                continue;
            }
            seen.insert(key.clone(), at.line);
            let Some(p) = self.product_ref(at, "product_code", &r.product_code) else {
                self.bad_lot.insert(key);
                continue;
            };
            if !r.gtin.is_empty() && !p.gtins.contains(&r.gtin) {
                let reason = format!("GTIN {} is not one of product '{}''s GTINs", r.gtin, r.product_code);
                self.problem(at.problem("gtin", reason));
                self.bad_lot.insert(key);
                continue;
            }
            if let Some(l) = db.get(&(p.id.as_str(), r.lot_number.as_str())) {
                let mut d = Diff::default();
                d.check("expiry", l.expiry, r.expiry);
                d.check("gtin", &l.gtin, &r.gtin);
                d.check("manufacturer", &l.manufacturer, &r.manufacturer);
                match d.problem(at, format!("lot '{}' of '{}'", r.lot_number, r.product_code)) {
                    Some(p) => self.problem(p),
                    None => self.out.summary.lots.unchanged += 1,
                }
                continue;
            }
            let l = Lot {
                id: new_id(),
                product_id: p.id.clone(),
                gtin: r.gtin.clone(),
                lot_number: r.lot_number.clone(),
                manufacturer: r.manufacturer.clone(),
                expiry: r.expiry,
                created_at: self.now,
            };
            let info = LotInfo {
                lot_id: l.id.clone(),
                product_id: p.id.clone(),
                doses_per_vial: i64::from(p.doses_per_vial),
                expiry: l.expiry,
            };
            self.lot.insert(key, (info, r.product_code.clone()));
            self.out.plan.lots.push(l);
        }
        self.out.summary.lots.new = self.out.plan.lots.len();
    }

    fn lot_ref<T>(&mut self, at: &Located<T>, product_code: &str, lot_number: &str) -> Option<LotInfo> {
        let key = (product_code.to_owned(), lot_number.to_owned());
        if let Some((l, _)) = self.lot.get(&key) {
            return Some(l.clone());
        }
        if self.bad_lot.contains(&key) || self.bad_prod.contains(product_code) {
            return None;
        }
        let (column, reason) = if self.prod.contains_key(product_code) {
            ("lot_number", format!("unknown lot '{lot_number}' of product '{product_code}'"))
        } else {
            ("product_code", format!("unknown product '{product_code}': not in this import nor in the database"))
        };
        self.problem(at.problem(column, reason));
        None
    }

    fn balances(&mut self) {
        let opening: HashMap<(&str, &str), i64> =
            self.snap.opening.iter().map(|b| ((b.storage_unit_id.as_str(), b.lot_id.as_str()), b.vials)).collect();
        let mut seen: HashMap<(String, String), u64> = HashMap::new();
        let mut drafts = Vec::new();
        for at in &self.rows.balances {
            let r = &at.row;
            let unit = self.unit_ref(at, &r.facility_code, &r.unit_name);
            let lot = self.lot_ref(at, &r.product_code, &r.lot_number);
            let (Some(unit), Some(lot)) = (unit, lot) else { continue };
            let key = (unit.id.clone(), lot.lot_id.clone());
            if let Some(first) = seen.get(&key) {
                let reason = format!("a second opening balance for this lot in this unit (first on line {first})");
                self.problem(at.problem("lot_number", reason));
                continue;
            }
            seen.insert(key, at.line);
            let profile = self.prod.get(&r.product_code).map(|p| (p.profile, p.name.clone()));
            if let Some((TemperatureProfile::Refrigerated, name)) = profile
                && unit.profile != TemperatureProfile::Refrigerated
            {
                let reason = format!("{name} must be kept at +2..+8 °C; storage unit '{}' is a freezer", r.unit_name);
                self.problem(at.problem("unit_name", reason));
                continue;
            }
            match opening.get(&(unit.id.as_str(), lot.lot_id.as_str())) {
                Some(&v) if v == r.vials => self.out.summary.balances.unchanged += 1,
                Some(&v) => {
                    let reason = format!(
                        "an opening balance of {v} vials was already imported for this lot in this unit; correct \
                         stock with a physical count, not a second opening balance"
                    );
                    self.problem(at.problem("vials", reason));
                }
                None => {
                    let mut d = EntryDraft::new(EntryKind::Receipt, &unit.id, &unit.facility_id, &lot, r.vials);
                    d.comment = "opening balance".to_owned();
                    drafts.push(d);
                }
            }
        }
        self.out.summary.balances.new = drafts.len();
        if !drafts.is_empty() {
            self.out.plan.opening = Some(Operation {
                id: new_id(),
                actor: ACTOR.to_owned(),
                request_id: OPENING_BALANCE_REQUEST_ID.to_owned(),
                drafts,
                vvm: Vec::new(),
            });
        }
    }

    fn policies(&mut self) {
        let db: HashMap<(&str, &str), &StockPolicy> =
            self.snap.policies.iter().map(|p| ((p.facility_id.as_str(), p.product_id.as_str()), p)).collect();
        let mut seen: HashMap<(String, String), u64> = HashMap::new();
        for at in &self.rows.policies {
            let r = &at.row;
            let f = self.facility_ref(at, "facility_code", &r.facility_code);
            let p = self.product_ref(at, "product_code", &r.product_code);
            let (Some(f), Some(p)) = (f, p) else { continue };
            let key = (f.id.clone(), p.id.clone());
            if let Some(first) = seen.get(&key) {
                let reason = format!("a second policy for this facility and product (first on line {first})");
                self.problem(at.problem("product_code", reason));
                continue;
            }
            seen.insert(key, at.line);
            if let Some(e) = db.get(&(f.id.as_str(), p.id.as_str())) {
                let mut d = Diff::default();
                d.check("min_doses", e.min_doses, r.min_doses);
                d.check("max_doses", e.max_doses, r.max_doses);
                match d.problem(at, format!("the policy of '{}' at '{}'", r.product_code, r.facility_code)) {
                    Some(p) => self.problem(p),
                    None => self.out.summary.policies.unchanged += 1,
                }
                continue;
            }
            self.out.plan.policies.push(StockPolicy {
                facility_id: f.id,
                product_id: p.id,
                min_doses: r.min_doses,
                max_doses: r.max_doses,
                updated_at: self.now,
                updated_by: ACTOR.to_owned(),
            });
        }
        self.out.summary.policies.new = self.out.plan.policies.len();
    }

    fn devices(&mut self) {
        let db: HashMap<&str, &Device> = self.snap.devices.iter().map(|d| (d.serial.as_str(), d)).collect();
        let listed: HashSet<&str> = self.rows.devices.iter().map(|d| d.row.serial.as_str()).collect();
        let mut probes: HashMap<&str, Vec<&Located<super::rows::ProbeRow>>> = HashMap::new();
        for at in &self.rows.probes {
            let serial = at.row.device_serial.as_str();
            if listed.contains(serial) {
                probes.entry(serial).or_default().push(at);
            } else if !self.rows.broken.devices.contains(serial) {
                let reason = format!("device '{serial}' is not in devices.csv (probes are imported with their device)");
                self.problem(at.problem("device_serial", reason));
            }
        }
        let mut seen: HashMap<&str, u64> = HashMap::new();
        for at in &self.rows.devices {
            let r = &at.row;
            if let Some(first) = seen.get(r.serial.as_str()) {
                self.problem(at.problem("serial", format!("duplicate serial '{}' (first on line {first})", r.serial)));
                continue;
            }
            seen.insert(&r.serial, at.line);
            if self.rows.broken.devices.contains(&r.serial) {
                continue;
            }
            let Some(f) = self.facility_ref(at, "facility_code", &r.facility_code) else { continue };
            let mine = probes.get(r.serial.as_str()).cloned().unwrap_or_default();
            if mine.is_empty() || mine.len() > 16 {
                let reason = format!("the device has {} probes in probes.csv; a device has 1..16", mine.len());
                self.problem(at.problem("serial", reason));
                continue;
            }
            let mut bound: Vec<Probe> = Vec::with_capacity(mine.len());
            let mut ok = true;
            for p in mine {
                if bound.iter().any(|b| b.index == p.row.probe) {
                    let reason = format!("probe {} appears twice for device '{}'", p.row.probe, r.serial);
                    self.problem(p.problem("probe", reason));
                    ok = false;
                    continue;
                }
                let key = (r.facility_code.clone(), p.row.unit_name.clone());
                match self.unit.get(&key) {
                    Some(u) => bound.push(Probe {
                        index: p.row.probe,
                        storage_unit_id: u.id.clone(),
                        label: p.row.label.clone(),
                    }),
                    None => {
                        ok = false;
                        if !self.bad_unit.contains(&key) {
                            let reason = format!(
                                "no storage unit '{}' at facility '{}' (a probe measures a unit of its device's \
                                 facility)",
                                p.row.unit_name, r.facility_code
                            );
                            self.problem(p.problem("unit_name", reason));
                        }
                    }
                }
            }
            if !ok {
                continue;
            }
            bound.sort_by_key(|p| p.index);
            if let Some(e) = db.get(r.serial.as_str()) {
                let mut d = Diff::default();
                let show = |ps: &[Probe]| {
                    let mut v: Vec<String> =
                        ps.iter().map(|p| format!("{}:{}:{}", p.index, p.storage_unit_id, p.label)).collect();
                    v.sort();
                    v.join(";")
                };
                d.check(
                    "facility_code",
                    self.fac_code_by_id.get(e.facility_id.as_str()).copied().unwrap_or(""),
                    &r.facility_code,
                );
                d.check("name", &e.name, &r.name);
                d.check("model", &e.model, &r.model);
                d.check("expected_interval_secs", e.expected_interval_secs, r.expected_interval_secs);
                d.check("unsigned_allowed", e.unsigned_allowed, r.unsigned_allowed);
                d.check("active", e.active, r.active);
                if let (Some(k), Some(stored)) = (&r.key, self.snap.device_keys.get(&e.id))
                    && k != stored
                {
                    d.check("key_hex", "(the stored key)", "(another key)");
                }
                d.check("probes", show(&e.probes), show(&bound));
                match d.problem(at, format!("device '{}'", r.serial)) {
                    Some(p) => self.problem(p),
                    None => self.out.summary.devices.unchanged += 1,
                }
                continue;
            }
            let (key, generated) = match &r.key {
                Some(k) => (k.clone(), false),
                None => {
                    let mut k = vec![0u8; 32];
                    rand::RngCore::fill_bytes(&mut rand::rng(), &mut k);
                    (k, true)
                }
            };
            let dev = Device {
                id: new_id(),
                serial: r.serial.clone(),
                name: r.name.clone(),
                model: r.model.clone(),
                facility_id: f.id,
                probes: bound,
                expected_interval_secs: r.expected_interval_secs,
                unsigned_allowed: r.unsigned_allowed,
                key_version: 1,
                key_rotated_at: self.now,
                last_seen_at: None,
                last_seq: 0,
                seq_offset: 0,
                online: false,
                active: r.active,
                created_at: self.now,
                updated_at: self.now,
            };
            if generated {
                self.out.secrets.push(IssuedSecret {
                    kind: "device_key",
                    subject: dev.serial.clone(),
                    id: dev.id.clone(),
                    secret: hex(&key),
                });
            }
            self.device.insert(dev.serial.clone(), dev.id.clone());
            self.out.plan.devices.push((dev, key));
        }
        self.out.summary.devices.new = self.out.plan.devices.len();
    }

    fn tokens(&mut self) {
        type Key = (Role, Option<String>, Option<String>, String);
        let db: HashSet<Key> = self
            .snap
            .tokens
            .iter()
            .map(|t| (t.role, t.scope_facility_id.clone(), t.device_id.clone(), t.description.clone()))
            .collect();
        let mut seen: HashMap<Key, u64> = HashMap::new();
        for at in &self.rows.tokens {
            let r = &at.row;
            let scope = match &r.scope_code {
                Some(c) => match self.facility_ref(at, "scope_facility_code", c) {
                    Some(f) => Some(f.id),
                    None => continue,
                },
                None => None,
            };
            let device = match &r.device_serial {
                Some(s) => match self.device.get(s) {
                    Some(id) => Some(id.clone()),
                    None => {
                        if !self.rows.broken.devices.contains(s) {
                            let reason = format!("unknown device '{s}': not in this import nor in the database");
                            self.problem(at.problem("device_serial", reason));
                        }
                        continue;
                    }
                },
                None => None,
            };
            let key: Key = (r.role, scope.clone(), device.clone(), r.description.clone());
            if let Some(first) = seen.get(&key) {
                let reason = format!("the same token (role, scope, device, description) is on line {first}");
                self.problem(at.problem("description", reason));
                continue;
            }
            seen.insert(key.clone(), at.line);
            if db.contains(&key) {
                self.out.summary.tokens.unchanged += 1;
                continue;
            }
            let new = match NewToken::parse(
                r.role.as_i32(),
                scope.as_deref().unwrap_or(""),
                device.as_deref().unwrap_or(""),
                &r.description,
            ) {
                Ok(n) => n,
                Err(e) => {
                    self.problem(at.problem("", reason_of(e)));
                    continue;
                }
            };
            let g = token::generate();
            let t = Token {
                id: g.id.clone(),
                role: new.role,
                scope_facility_id: new.scope_facility_id,
                device_id: new.device_id,
                description: new.description,
                created_at: self.now,
                revoked_at: None,
            };
            let subject =
                format!("{} {} {}", t.role.name(), r.scope_code.as_deref().unwrap_or("(whole tree)"), t.description);
            self.out.secrets.push(IssuedSecret { kind: "token", subject, id: t.id.clone(), secret: g.bearer.clone() });
            self.out.plan.tokens.push((t, g.hash.clone()));
        }
        self.out.summary.tokens.new = self.out.plan.tokens.len();
    }
}
