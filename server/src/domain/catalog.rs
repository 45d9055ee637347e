//! The vaccine catalogue: products and lots.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::facility::{TemperatureProfile, field_mask, int_enum};
use super::validate;
use crate::error::{Error, Result};

int_enum! {
    /// Ready to use or reconstituted.
    Presentation {
        /// Liquid.
        Liquid = 1,
        /// Freeze-dried, reconstituted with diluent.
        Lyophilised = 2,
    }
}

int_enum! {
    /// The vaccine vial monitor type.
    VvmType {
        /// No VVM.
        None = 1,
        /// VVM2.
        Vvm2 = 2,
        /// VVM7.
        Vvm7 = 3,
        /// VVM14.
        Vvm14 = 4,
        /// VVM30.
        Vvm30 = 5,
        /// VVM250.
        Vvm250 = 6,
    }
}

/// A vaccine product in one presentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// Server-assigned id.
    pub id: String,
    /// Unique code.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Antigen / vaccine.
    pub vaccine: String,
    /// Doses per vial.
    pub doses_per_vial: i32,
    /// Liquid or lyophilised.
    pub presentation: Presentation,
    /// VVM type.
    pub vvm_type: VvmType,
    /// Required storage range.
    pub temperature_profile: TemperatureProfile,
    /// Acceptable wastage in basis points.
    pub acceptable_wastage_bp: i32,
    /// Whether the WHO multi-dose vial policy applies.
    pub multi_dose_vial_policy: bool,
    /// GTIN-14s of the packs.
    pub gtins: Vec<String>,
    /// In use.
    pub active: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// WHO indicative maximum wastage (basis points) for a presentation: single-dose 5 %, 2–6 doses
/// 10 %, 7 or more doses 25 % liquid and 50 % lyophilised.
pub fn who_max_wastage_bp(doses_per_vial: i32, presentation: Presentation) -> i32 {
    match (doses_per_vial, presentation) {
        (..=1, _) => 500,
        (2..=6, _) => 1000,
        (_, Presentation::Liquid) => 2500,
        (_, Presentation::Lyophilised) => 5000,
    }
}

/// Raw product fields as they come from any transport.
#[derive(Debug, Clone, Default)]
pub struct ProductInput {
    /// Code.
    pub code: String,
    /// Name.
    pub name: String,
    /// Vaccine.
    pub vaccine: String,
    /// Doses per vial.
    pub doses_per_vial: i32,
    /// Presentation number.
    pub presentation: i32,
    /// VVM type number.
    pub vvm_type: i32,
    /// Profile number.
    pub temperature_profile: i32,
    /// Acceptable wastage in basis points (0 = WHO default).
    pub acceptable_wastage_bp: i32,
    /// MDVP flag.
    pub multi_dose_vial_policy: bool,
    /// GTINs.
    pub gtins: Vec<String>,
    /// Active flag (updates only).
    pub active: bool,
}

/// A validated request to create a product.
#[derive(Debug, Clone, PartialEq)]
pub struct NewProduct {
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
    pub temperature_profile: TemperatureProfile,
    /// Acceptable wastage (bp), WHO default applied.
    pub acceptable_wastage_bp: i32,
    /// MDVP flag.
    pub multi_dose_vial_policy: bool,
    /// GTIN-14s, deduplicated.
    pub gtins: Vec<String>,
}

fn wastage(v: i32) -> Result<i32> {
    if (0..=10_000).contains(&v) {
        Ok(v)
    } else {
        Err(Error::invalid("product.acceptable_wastage_bp", "must be within 0..10000"))
    }
}

fn gtins(values: &[String]) -> Result<Vec<String>> {
    if values.len() > 20 {
        return Err(Error::invalid("product.gtins", "at most 20 GTINs"));
    }
    let mut out = Vec::with_capacity(values.len());
    for (i, g) in values.iter().enumerate() {
        let g = validate::gtin(&format!("product.gtins[{i}]"), g)?;
        if !out.contains(&g) {
            out.push(g);
        }
    }
    Ok(out)
}

impl NewProduct {
    /// Validates raw input; applies the WHO wastage default when none is given.
    pub fn parse(input: ProductInput) -> Result<Self> {
        if !(1..=100).contains(&input.doses_per_vial) {
            return Err(Error::invalid("product.doses_per_vial", "must be within 1..100"));
        }
        let presentation = Presentation::from_i32(input.presentation)
            .ok_or_else(|| Error::invalid("product.presentation", "must be liquid or lyophilised"))?;
        let vvm_type = VvmType::from_i32(input.vvm_type)
            .ok_or_else(|| Error::invalid("product.vvm_type", "must be a known VVM type (or NONE)"))?;
        let temperature_profile = TemperatureProfile::from_i32(input.temperature_profile)
            .ok_or_else(|| Error::invalid("product.temperature_profile", "must be a known profile"))?;
        let bp = wastage(input.acceptable_wastage_bp)?;
        Ok(NewProduct {
            code: validate::code("product.code", &input.code)?,
            name: validate::text("product.name", &input.name, 200)?,
            vaccine: validate::text("product.vaccine", &input.vaccine, 100)?,
            doses_per_vial: input.doses_per_vial,
            presentation,
            vvm_type,
            temperature_profile,
            acceptable_wastage_bp: if bp == 0 { who_max_wastage_bp(input.doses_per_vial, presentation) } else { bp },
            multi_dose_vial_policy: input.multi_dose_vial_policy,
            gtins: gtins(&input.gtins)?,
        })
    }
}

/// A validated change to a product.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProductPatch {
    /// New name.
    pub name: Option<String>,
    /// New acceptable wastage.
    pub acceptable_wastage_bp: Option<i32>,
    /// New MDVP flag.
    pub multi_dose_vial_policy: Option<bool>,
    /// New GTIN list.
    pub gtins: Option<Vec<String>>,
    /// New active flag.
    pub active: Option<bool>,
}

impl ProductPatch {
    /// Validates the fields named in `mask` (empty = all).
    pub fn parse(input: &ProductInput, mask: &[String]) -> Result<Self> {
        const FIELDS: [&str; 5] = ["name", "acceptable_wastage_bp", "multi_dose_vial_policy", "gtins", "active"];
        let mask = field_mask("update_mask", mask, &FIELDS)?;
        let has = |f: &str| mask.iter().any(|m| m == f);
        Ok(ProductPatch {
            name: if has("name") { Some(validate::text("product.name", &input.name, 200)?) } else { None },
            acceptable_wastage_bp: if has("acceptable_wastage_bp") {
                Some(wastage(input.acceptable_wastage_bp)?)
            } else {
                None
            },
            multi_dose_vial_policy: has("multi_dose_vial_policy").then_some(input.multi_dose_vial_policy),
            gtins: if has("gtins") { Some(gtins(&input.gtins)?) } else { None },
            active: has("active").then_some(input.active),
        })
    }

    /// Applies the patch; a zero wastage restores the WHO default.
    pub fn apply(&self, p: &mut Product) {
        if let Some(v) = &self.name {
            p.name.clone_from(v);
        }
        if let Some(v) = self.acceptable_wastage_bp {
            p.acceptable_wastage_bp = if v == 0 { who_max_wastage_bp(p.doses_per_vial, p.presentation) } else { v };
        }
        if let Some(v) = self.multi_dose_vial_policy {
            p.multi_dose_vial_policy = v;
        }
        if let Some(v) = &self.gtins {
            p.gtins.clone_from(v);
        }
        if let Some(v) = self.active {
            p.active = v;
        }
    }
}

/// A manufacturer's lot of a product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lot {
    /// Server-assigned id.
    pub id: String,
    /// Product id.
    pub product_id: String,
    /// GTIN-14 or "".
    pub gtin: String,
    /// Lot number.
    pub lot_number: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Last day of use.
    pub expiry: NaiveDate,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A validated request to create a lot.
#[derive(Debug, Clone, PartialEq)]
pub struct NewLot {
    /// Product id.
    pub product_id: String,
    /// GTIN-14 or "".
    pub gtin: String,
    /// Lot number.
    pub lot_number: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Expiry.
    pub expiry: NaiveDate,
}

/// Raw lot fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LotInput {
    /// Product id.
    pub product_id: String,
    /// GTIN or "".
    pub gtin: String,
    /// Lot number.
    pub lot_number: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Expiry (year, month, day), if given.
    pub expiry: Option<(i32, i32, i32)>,
}

/// Validates a calendar date from its parts.
pub fn date(field: &str, ymd: Option<(i32, i32, i32)>) -> Result<NaiveDate> {
    let (y, m, d) = ymd.ok_or_else(|| Error::invalid(field, "is required"))?;
    let (Ok(m), Ok(d)) = (u32::try_from(m), u32::try_from(d)) else {
        return Err(Error::invalid(field, "is not a valid date"));
    };
    if !(1..=9999).contains(&y) {
        return Err(Error::invalid(field, "is not a valid date"));
    }
    NaiveDate::from_ymd_opt(y, m, d).ok_or_else(|| Error::invalid(field, "is not a valid date"))
}

impl NewLot {
    /// Validates raw input. The lot number follows the GS1 AI (10) rules: 1..20 characters.
    pub fn parse(input: LotInput) -> Result<Self> {
        let lot_number = validate::text("lot.lot_number", &input.lot_number, 20)?;
        if !lot_number.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Error::invalid("lot.lot_number", "must be printable ASCII without spaces"));
        }
        let gtin = if input.gtin.trim().is_empty() { String::new() } else { validate::gtin("lot.gtin", &input.gtin)? };
        Ok(NewLot {
            product_id: validate::id("lot.product_id", &input.product_id)?,
            gtin,
            lot_number,
            manufacturer: validate::optional_text("lot.manufacturer", &input.manufacturer, 200)?,
            expiry: date("lot.expiry", input.expiry)?,
        })
    }

    /// Checks the lot's GTIN against its product's GTINs.
    pub fn check_product(&self, product: &Product) -> Result<()> {
        if !self.gtin.is_empty() && !product.gtins.contains(&self.gtin) {
            return Err(Error::invalid(
                "lot.gtin",
                format!("GTIN {} is not one of product {}'s GTINs", self.gtin, product.code),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_wastage_defaults() {
        assert_eq!(who_max_wastage_bp(1, Presentation::Liquid), 500);
        assert_eq!(who_max_wastage_bp(2, Presentation::Liquid), 1000);
        assert_eq!(who_max_wastage_bp(6, Presentation::Lyophilised), 1000);
        assert_eq!(who_max_wastage_bp(10, Presentation::Liquid), 2500);
        assert_eq!(who_max_wastage_bp(20, Presentation::Lyophilised), 5000);
    }

    #[test]
    fn dates_are_checked() {
        assert!(date("d", Some((2027, 2, 29))).is_err());
        assert!(date("d", Some((2028, 2, 29))).is_ok());
        assert!(date("d", Some((2027, -1, 1))).is_err());
        assert!(date("d", None).is_err());
    }
}
