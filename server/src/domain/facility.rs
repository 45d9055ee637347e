//! The facility tree and storage units.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::thresholds::{self, AlarmOverrides, AlarmOverridesInput};
use super::validate;
use crate::error::{Error, Result, reason};

macro_rules! int_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $n:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// The stable number used in the database and the API.
            pub fn as_i32(self) -> i32 { match self { $($name::$variant => $n),+ } }

            /// The inverse of `as_i32`; `None` for 0 (unspecified) and unknown numbers.
            pub fn from_i32(v: i32) -> Option<Self> { match v { $($n => Some($name::$variant),)+ _ => None } }
        }
    };
}
pub(crate) use int_enum;

int_enum! {
    /// The level of a facility in the supply chain, national (1) down to session site (5).
    FacilityKind {
        /// The root of the tree.
        NationalStore = 1,
        /// A state or regional store.
        StateStore = 2,
        /// A district store.
        DistrictStore = 3,
        /// A health facility that stores vaccine.
        ColdChainPoint = 4,
        /// Where sessions are held.
        SessionSite = 5,
    }
}

int_enum! {
    /// The kind of equipment a storage unit is.
    StorageUnitKind {
        /// Ice-lined refrigerator.
        Ilr = 1,
        /// Deep freezer.
        DeepFreezer = 2,
        /// Walk-in cooler.
        WalkInCooler = 3,
        /// Walk-in freezer.
        WalkInFreezer = 4,
        /// Cold box.
        ColdBox = 5,
        /// Vaccine carrier.
        VaccineCarrier = 6,
        /// Solar direct-drive refrigerator.
        SolarFridge = 7,
        /// Ultra-low temperature freezer.
        UltraLowFreezer = 8,
    }
}

int_enum! {
    /// The temperature range a unit keeps or a product needs.
    TemperatureProfile {
        /// +2..+8 °C.
        Refrigerated = 1,
        /// −25..−15 °C.
        Frozen = 2,
        /// −90..−60 °C.
        UltraLow = 3,
    }
}

/// A node of the facility tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Facility {
    /// Server-assigned id.
    pub id: String,
    /// Parent id; `None` only for the national store.
    pub parent_id: Option<String>,
    /// Level in the tree.
    pub kind: FacilityKind,
    /// The country's unique code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// GS1 GLN or "".
    pub gln: String,
    /// External system id (DHIS2 uid) or "".
    pub external_id: String,
    /// Latitude in degrees.
    pub latitude: Option<f64>,
    /// Longitude in degrees.
    pub longitude: Option<f64>,
    /// False when closed.
    pub active: bool,
    /// `/root/.../self/`: the ids from the root down to this facility.
    pub path: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Facility {
    /// The ids of the ancestors, root first (the path without the facility itself).
    pub fn ancestor_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.path.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
        ids.pop();
        ids
    }

    /// Whether a facility of `child` kind may hang below this one.
    pub fn may_parent(&self, child: FacilityKind) -> bool {
        child.as_i32() > self.kind.as_i32()
    }
}

/// A validated request to create a facility.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFacility {
    /// Parent id, required unless the kind is the national store.
    pub parent_id: Option<String>,
    /// Level.
    pub kind: FacilityKind,
    /// Unique code.
    pub code: String,
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
}

/// Raw, unvalidated facility fields as they come from any transport.
#[derive(Debug, Clone, Default)]
pub struct FacilityInput {
    /// Parent id or "".
    pub parent_id: String,
    /// Kind number (0 = unspecified).
    pub kind: i32,
    /// Code.
    pub code: String,
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
    /// Active flag (updates only).
    pub active: bool,
}

fn coordinates(lat: Option<f64>, lon: Option<f64>) -> Result<(Option<f64>, Option<f64>)> {
    if lat.is_some_and(|l| !(-90.0..=90.0).contains(&l)) {
        return Err(Error::invalid("facility.latitude", "must be within -90..90"));
    }
    if lon.is_some_and(|l| !(-180.0..=180.0).contains(&l)) {
        return Err(Error::invalid("facility.longitude", "must be within -180..180"));
    }
    Ok((lat, lon))
}

impl NewFacility {
    /// Validates raw input; errors name the field.
    pub fn parse(input: FacilityInput) -> Result<Self> {
        let kind = FacilityKind::from_i32(input.kind)
            .ok_or_else(|| Error::invalid("facility.kind", "must be a known facility kind"))?;
        let parent_id = validate::optional_id("facility.parent_id", &input.parent_id)?;
        match (kind, &parent_id) {
            (FacilityKind::NationalStore, Some(_)) => {
                return Err(Error::invalid("facility.parent_id", "the national store has no parent"));
            }
            (k, None) if k != FacilityKind::NationalStore => {
                return Err(Error::invalid("facility.parent_id", "is required"));
            }
            _ => {}
        }
        let (latitude, longitude) = coordinates(input.latitude, input.longitude)?;
        Ok(NewFacility {
            parent_id,
            kind,
            code: validate::code("facility.code", &input.code)?,
            name: validate::text("facility.name", &input.name, 200)?,
            gln: validate::optional_gln("facility.gln", &input.gln)?,
            external_id: validate::optional_text("facility.external_id", &input.external_id, 64)?,
            latitude,
            longitude,
        })
    }

    /// Checks the place in the tree: the parent must sit strictly above the new facility.
    pub fn check_parent(&self, parent: &Facility) -> Result<()> {
        if parent.may_parent(self.kind) {
            Ok(())
        } else {
            Err(Error::precondition(
                reason::INVALID_PARENT_KIND,
                format!("a {:?} cannot be placed under a {:?}", self.kind, parent.kind),
            ))
        }
    }
}

/// A validated change to a facility; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FacilityPatch {
    /// New name.
    pub name: Option<String>,
    /// New GLN.
    pub gln: Option<String>,
    /// New external id.
    pub external_id: Option<String>,
    /// New latitude (`Some(None)` clears it).
    pub latitude: Option<Option<f64>>,
    /// New longitude (`Some(None)` clears it).
    pub longitude: Option<Option<f64>>,
    /// New active flag.
    pub active: Option<bool>,
}

impl FacilityPatch {
    /// Validates the fields named in `mask` (empty = all mutable fields).
    pub fn parse(input: &FacilityInput, mask: &[String]) -> Result<Self> {
        const FIELDS: [&str; 6] = ["name", "gln", "external_id", "latitude", "longitude", "active"];
        let mask = field_mask("update_mask", mask, &FIELDS)?;
        let has = |f: &str| mask.iter().any(|m| m == f);
        let (lat, lon) = coordinates(input.latitude, input.longitude)?;
        Ok(FacilityPatch {
            name: if has("name") { Some(validate::text("facility.name", &input.name, 200)?) } else { None },
            gln: if has("gln") { Some(validate::optional_gln("facility.gln", &input.gln)?) } else { None },
            external_id: if has("external_id") {
                Some(validate::optional_text("facility.external_id", &input.external_id, 64)?)
            } else {
                None
            },
            latitude: has("latitude").then_some(lat),
            longitude: has("longitude").then_some(lon),
            active: has("active").then_some(input.active),
        })
    }

    /// Applies the patch to a facility.
    pub fn apply(&self, f: &mut Facility) {
        if let Some(v) = &self.name {
            f.name.clone_from(v);
        }
        if let Some(v) = &self.gln {
            f.gln.clone_from(v);
        }
        if let Some(v) = &self.external_id {
            f.external_id.clone_from(v);
        }
        if let Some(v) = self.latitude {
            f.latitude = v;
        }
        if let Some(v) = self.longitude {
            f.longitude = v;
        }
        if let Some(v) = self.active {
            f.active = v;
        }
    }
}

/// Checks an update mask against the allowed field names; empty means all of them.
pub fn field_mask(field: &str, mask: &[String], allowed: &[&str]) -> Result<Vec<String>> {
    if mask.is_empty() {
        return Ok(allowed.iter().map(|s| (*s).to_owned()).collect());
    }
    for m in mask {
        if !allowed.contains(&m.as_str()) {
            return Err(Error::invalid(field, format!("cannot update '{m}'; allowed: {}", allowed.join(", "))));
        }
    }
    Ok(mask.to_vec())
}

/// Filters of a facility listing; the caller's scope is always applied on top.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FacilityFilter {
    /// Strict descendants of this facility (path prefix, facility itself excluded).
    pub ancestor_path: Option<String>,
    /// Direct children of this facility.
    pub parent_id: Option<String>,
    /// Only this kind.
    pub kind: Option<FacilityKind>,
    /// Case-insensitive name substring.
    pub name_contains: Option<String>,
    /// Include closed facilities.
    pub include_inactive: bool,
}

/// Raw filters of a facility listing as they come from any transport.
#[derive(Debug, Clone, Default)]
pub struct FacilityQuery {
    /// Strict descendants of this facility id, or "".
    pub ancestor_id: String,
    /// Direct children of this facility id, or "".
    pub parent_id: String,
    /// Kind number, 0 = any.
    pub kind: i32,
    /// Name substring, or "".
    pub name_contains: String,
    /// Include closed facilities.
    pub include_inactive: bool,
}

/// A fridge, freezer or passive container at a facility.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageUnit {
    /// Server-assigned id.
    pub id: String,
    /// Facility it stands at.
    pub facility_id: String,
    /// Equipment kind.
    pub kind: StorageUnitKind,
    /// Name, unique per facility.
    pub name: String,
    /// Range it keeps.
    pub temperature_profile: TemperatureProfile,
    /// Capacity in litres (0 = unknown).
    pub capacity_litres: f64,
    /// In service.
    pub active: bool,
    /// This unit's changes to its profile's alarm rules (default: none). `serde(default)` because
    /// idempotent replays stored before the overrides existed lack the field.
    #[serde(default)]
    pub alarm_overrides: AlarmOverrides,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Raw storage unit fields as they come from any transport.
#[derive(Debug, Clone, Default)]
pub struct StorageUnitInput {
    /// Facility id.
    pub facility_id: String,
    /// Kind number.
    pub kind: i32,
    /// Name.
    pub name: String,
    /// Profile number.
    pub temperature_profile: i32,
    /// Capacity in litres.
    pub capacity_litres: f64,
    /// Active flag (updates only).
    pub active: bool,
    /// Alarm threshold overrides.
    pub alarm_overrides: AlarmOverridesInput,
}

/// A validated request to create a storage unit.
#[derive(Debug, Clone, PartialEq)]
pub struct NewStorageUnit {
    /// Facility id.
    pub facility_id: String,
    /// Kind.
    pub kind: StorageUnitKind,
    /// Name.
    pub name: String,
    /// Profile.
    pub temperature_profile: TemperatureProfile,
    /// Capacity in litres.
    pub capacity_litres: f64,
    /// Alarm threshold overrides, checked against the profile.
    pub alarm_overrides: AlarmOverrides,
}

fn capacity(v: f64) -> Result<f64> {
    if v.is_finite() && (0.0..=1_000_000.0).contains(&v) {
        Ok(v)
    } else {
        Err(Error::invalid("storage_unit.capacity_litres", "must be within 0..1000000"))
    }
}

fn profile(v: i32) -> Result<TemperatureProfile> {
    TemperatureProfile::from_i32(v)
        .ok_or_else(|| Error::invalid("storage_unit.temperature_profile", "must be a known profile"))
}

impl NewStorageUnit {
    /// Validates raw input.
    pub fn parse(input: StorageUnitInput) -> Result<Self> {
        let temperature_profile = profile(input.temperature_profile)?;
        let alarm_overrides = AlarmOverrides::parse(&input.alarm_overrides)?;
        alarm_overrides.check(temperature_profile)?;
        Ok(NewStorageUnit {
            facility_id: validate::id("storage_unit.facility_id", &input.facility_id)?,
            kind: StorageUnitKind::from_i32(input.kind)
                .ok_or_else(|| Error::invalid("storage_unit.kind", "must be a known storage unit kind"))?,
            name: validate::text("storage_unit.name", &input.name, 100)?,
            temperature_profile,
            capacity_litres: capacity(input.capacity_litres)?,
            alarm_overrides,
        })
    }
}

/// A validated change to a storage unit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StorageUnitPatch {
    /// New name.
    pub name: Option<String>,
    /// New profile.
    pub temperature_profile: Option<TemperatureProfile>,
    /// New capacity.
    pub capacity_litres: Option<f64>,
    /// New active flag.
    pub active: Option<bool>,
    /// New values of the alarm overrides named in `alarm_override_fields`.
    pub alarm_overrides: Option<AlarmOverrides>,
    /// Which overrides change (entries of `thresholds::FIELDS`); all of them for `alarm_overrides`.
    pub alarm_override_fields: Vec<&'static str>,
}

impl StorageUnitPatch {
    /// Validates the fields named in `mask` (empty = all). `alarm_overrides` replaces every
    /// override; `alarm_overrides.<name>` sets (or, left unset, clears) just that one.
    pub fn parse(input: &StorageUnitInput, mask: &[String]) -> Result<Self> {
        const FIELDS: [&str; 5] = ["name", "temperature_profile", "capacity_litres", "active", "alarm_overrides"];
        let sub: Vec<String> = thresholds::FIELDS.iter().map(|f| format!("alarm_overrides.{f}")).collect();
        let allowed: Vec<&str> = FIELDS.iter().copied().chain(sub.iter().map(String::as_str)).collect();
        // An empty mask means every top-level field, the overrides as a whole.
        let mask = if mask.is_empty() { field_mask("update_mask", mask, &FIELDS)? } else { mask.to_vec() };
        let mask = field_mask("update_mask", &mask, &allowed)?;
        let has = |f: &str| mask.iter().any(|m| m == f);
        let override_fields: Vec<&'static str> = if has("alarm_overrides") {
            thresholds::FIELDS.to_vec()
        } else {
            thresholds::FIELDS.iter().copied().filter(|f| has(&format!("alarm_overrides.{f}"))).collect()
        };
        let mut overrides = AlarmOverrides::default();
        for f in &override_fields {
            overrides.parse_field(&input.alarm_overrides, f)?;
        }
        Ok(StorageUnitPatch {
            name: if has("name") { Some(validate::text("storage_unit.name", &input.name, 100)?) } else { None },
            temperature_profile: if has("temperature_profile") {
                Some(profile(input.temperature_profile)?)
            } else {
                None
            },
            capacity_litres: if has("capacity_litres") { Some(capacity(input.capacity_litres)?) } else { None },
            active: has("active").then_some(input.active),
            alarm_overrides: (!override_fields.is_empty()).then_some(overrides),
            alarm_override_fields: override_fields,
        })
    }

    /// Applies the patch, then checks the unit's overrides against its (possibly new) profile:
    /// only the merged unit shows whether, say, a new range low still lies above its freeze
    /// threshold.
    pub fn apply(&self, u: &mut StorageUnit) -> Result<()> {
        if let Some(v) = &self.name {
            u.name.clone_from(v);
        }
        if let Some(v) = self.temperature_profile {
            u.temperature_profile = v;
        }
        if let Some(v) = self.capacity_litres {
            u.capacity_litres = v;
        }
        if let Some(v) = self.active {
            u.active = v;
        }
        if let Some(o) = &self.alarm_overrides {
            for f in &self.alarm_override_fields {
                u.alarm_overrides.take(o, f);
            }
        }
        u.alarm_overrides.check(u.temperature_profile)
    }
}

/// Filters of a storage unit listing; the caller's scope is applied on top.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StorageUnitFilter {
    /// Only units at this facility.
    pub facility_id: Option<String>,
    /// Only units at facilities under this path (inclusive).
    pub ancestor_path: Option<String>,
    /// Include out-of-service units.
    pub include_inactive: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(kind: FacilityKind, parent: &str) -> FacilityInput {
        FacilityInput {
            parent_id: parent.into(),
            kind: kind.as_i32(),
            code: "C1".into(),
            name: "N".into(),
            ..Default::default()
        }
    }

    #[test]
    fn national_store_has_no_parent_and_others_need_one() {
        let pid = "0190f3e2-7c1a-7abc-8def-0123456789ab";
        assert!(NewFacility::parse(input(FacilityKind::NationalStore, "")).is_ok());
        assert!(NewFacility::parse(input(FacilityKind::NationalStore, pid)).is_err());
        let e = NewFacility::parse(input(FacilityKind::DistrictStore, ""));
        assert!(matches!(e, Err(Error::InvalidArgument { ref field, .. }) if field == "facility.parent_id"));
        assert!(NewFacility::parse(input(FacilityKind::DistrictStore, "bogus")).is_err());
        let mut bad = input(FacilityKind::NationalStore, "");
        bad.kind = 0;
        assert!(
            matches!(NewFacility::parse(bad), Err(Error::InvalidArgument { ref field, .. }) if field == "facility.kind")
        );
    }

    fn unit(profile: TemperatureProfile, overrides: AlarmOverrides) -> StorageUnit {
        StorageUnit {
            id: String::new(),
            facility_id: String::new(),
            kind: StorageUnitKind::Ilr,
            name: "ILR 1".into(),
            temperature_profile: profile,
            capacity_litres: 0.0,
            active: true,
            alarm_overrides: overrides,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn field_of<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => format!("not an invalid argument: {other:?}"),
        }
    }

    #[test]
    fn a_new_unit_checks_its_overrides_against_its_profile() {
        let mut i = StorageUnitInput {
            facility_id: "0190f3e2-7c1a-7abc-8def-0123456789ab".into(),
            kind: 1,
            name: "ILR 1".into(),
            temperature_profile: TemperatureProfile::Refrigerated.as_i32(),
            ..Default::default()
        };
        i.alarm_overrides.range_high_c = Some(12.0);
        i.alarm_overrides.heat_alarm_secs = Some(3600);
        let u = NewStorageUnit::parse(i.clone()).expect("a valid unit");
        assert_eq!((u.alarm_overrides.range_high_centi, u.alarm_overrides.heat_alarm_secs), (Some(1200), Some(3600)));
        // A freezer's range starts at −25 °C: a high of −30 °C lies below it.
        i.temperature_profile = TemperatureProfile::Frozen.as_i32();
        i.alarm_overrides.range_high_c = Some(-30.0);
        assert_eq!(field_of(NewStorageUnit::parse(i)), "storage_unit.alarm_overrides.range_high_c");
    }

    #[test]
    fn update_masks_name_overrides_whole_or_one_by_one() {
        let set = AlarmOverrides { range_high_centi: Some(1200), heat_alarm_secs: Some(3600), ..Default::default() };
        let mut input = StorageUnitInput { name: "ILR 2".into(), ..Default::default() };
        input.alarm_overrides.range_low_c = Some(3.0);

        // One override: the others stay.
        let p = StorageUnitPatch::parse(&input, &["alarm_overrides.range_low_c".into()]).expect("valid mask");
        let mut u = unit(TemperatureProfile::Refrigerated, set);
        assert!(p.apply(&mut u).is_ok());
        assert_eq!(u.alarm_overrides, AlarmOverrides { range_low_centi: Some(300), ..set });
        assert_eq!(u.name, "ILR 1", "not in the mask");

        // Named but unset: that override is cleared.
        let p = StorageUnitPatch::parse(&input, &["alarm_overrides.heat_alarm_after".into()]).expect("valid mask");
        let mut u = unit(TemperatureProfile::Refrigerated, set);
        assert!(p.apply(&mut u).is_ok());
        assert_eq!(u.alarm_overrides, AlarmOverrides { heat_alarm_secs: None, ..set });

        // The whole message replaces them all, and so does the empty mask (every top-level field,
        // so the input needs a valid profile too).
        let full = StorageUnitInput { temperature_profile: 1, ..input.clone() };
        for mask in [vec!["alarm_overrides".to_owned()], vec![]] {
            let p = StorageUnitPatch::parse(&full, &mask).expect("valid mask");
            let mut u = unit(TemperatureProfile::Refrigerated, set);
            assert!(p.apply(&mut u).is_ok());
            assert_eq!(u.alarm_overrides, AlarmOverrides { range_low_centi: Some(300), ..Default::default() });
        }

        // Unknown sub-fields are refused like unknown fields.
        let e = StorageUnitPatch::parse(&input, &["alarm_overrides.range_high".into()]);
        assert_eq!(field_of(e), "update_mask");
        // A value is checked on its own when parsed...
        input.alarm_overrides.heat_alarm_secs = Some(0);
        let e = StorageUnitPatch::parse(&input, &["alarm_overrides.heat_alarm_after".into()]);
        assert_eq!(field_of(e), "storage_unit.alarm_overrides.heat_alarm_after");
        // ...and the merged unit when applied: a new profile must still fit the overrides.
        let to_freezer = StorageUnitInput { temperature_profile: 2, ..Default::default() };
        let p = StorageUnitPatch::parse(&to_freezer, &["temperature_profile".into()]).expect("valid mask");
        // A low of 3 °C suits a fridge, not a freezer whose high is −15 °C.
        let mut u =
            unit(TemperatureProfile::Refrigerated, AlarmOverrides { range_low_centi: Some(300), ..Default::default() });
        assert!(
            AlarmOverrides { range_low_centi: Some(300), ..Default::default() }.check(u.temperature_profile).is_ok()
        );
        assert_eq!(field_of(p.apply(&mut u)), "storage_unit.alarm_overrides.range_low_c");
    }

    #[test]
    fn mask_rejects_unknown_fields() {
        let i = FacilityInput { name: "x".into(), ..Default::default() };
        assert!(FacilityPatch::parse(&i, &["parent_id".into()]).is_err());
        let p = FacilityPatch::parse(&i, &["name".into()]).ok();
        assert_eq!(p.and_then(|p| p.name), Some("x".into()));
    }
}
