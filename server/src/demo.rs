//! A sample country for `vaxtrace-server demo`: one state, three districts, about thirty
//! facilities with storage units, the common EPI vaccines in their real presentations, and lots.

use crate::app::{App, IssuedToken};
use crate::domain::catalog::{LotInput, ProductInput};
use crate::domain::facility::{FacilityInput, StorageUnitInput};
use crate::domain::{Caller, FacilityKind, Presentation, StorageUnitKind, TemperatureProfile, VvmType};
use crate::error::Result;

/// What the seed created, for the banner.
#[derive(Debug, Clone, Default)]
pub struct Seeded {
    /// Facilities created.
    pub facilities: usize,
    /// Storage units created.
    pub storage_units: usize,
    /// Products created.
    pub products: usize,
    /// Lots created.
    pub lots: usize,
}

struct ProductSpec {
    code: &'static str,
    name: &'static str,
    vaccine: &'static str,
    doses: i32,
    presentation: Presentation,
    vvm: VvmType,
    profile: TemperatureProfile,
    mdvp: bool,
    gtin: &'static str,
    manufacturer: &'static str,
}

// Presentations as supplied to national programmes (UNICEF SD catalogue); GTINs are
// check-digit-valid examples under GS1's documentation prefix 0950600.
const PRODUCTS: &[ProductSpec] = &[
    ProductSpec {
        code: "BCG20",
        name: "BCG 20-dose",
        vaccine: "BCG",
        doses: 20,
        presentation: Presentation::Lyophilised,
        vvm: VvmType::Vvm30,
        profile: TemperatureProfile::Refrigerated,
        mdvp: false,
        gtin: "09506000000015",
        manufacturer: "Serum Institute of India",
    },
    ProductSpec {
        code: "BOPV20",
        name: "bOPV 20-dose",
        vaccine: "bOPV",
        doses: 20,
        presentation: Presentation::Liquid,
        vvm: VvmType::Vvm2,
        profile: TemperatureProfile::Frozen,
        mdvp: true,
        gtin: "09506000000022",
        manufacturer: "Bharat Biotech",
    },
    ProductSpec {
        code: "PENTA10",
        name: "Pentavalent (DTP-HepB-Hib) 10-dose",
        vaccine: "Pentavalent",
        doses: 10,
        presentation: Presentation::Liquid,
        vvm: VvmType::Vvm14,
        profile: TemperatureProfile::Refrigerated,
        mdvp: true,
        gtin: "09506000000039",
        manufacturer: "Biological E",
    },
    ProductSpec {
        code: "MR10",
        name: "Measles-Rubella 10-dose",
        vaccine: "MR",
        doses: 10,
        presentation: Presentation::Lyophilised,
        vvm: VvmType::Vvm14,
        profile: TemperatureProfile::Refrigerated,
        mdvp: false,
        gtin: "09506000000046",
        manufacturer: "Serum Institute of India",
    },
    ProductSpec {
        code: "TD10",
        name: "Td 10-dose",
        vaccine: "Td",
        doses: 10,
        presentation: Presentation::Liquid,
        vvm: VvmType::Vvm30,
        profile: TemperatureProfile::Refrigerated,
        mdvp: true,
        gtin: "09506000000053",
        manufacturer: "Biological E",
    },
    ProductSpec {
        code: "COVID10",
        name: "COVID-19 vaccine 10-dose",
        vaccine: "COVID-19",
        doses: 10,
        presentation: Presentation::Liquid,
        vvm: VvmType::Vvm14,
        profile: TemperatureProfile::Refrigerated,
        mdvp: false,
        gtin: "09506000000060",
        manufacturer: "Serum Institute of India",
    },
];

const DISTRICTS: &[(&str, &str, &[&str])] = &[
    ("PUNE", "Pune", &["Haveli", "Mulshi", "Maval", "Baramati", "Junnar"]),
    ("NASHIK", "Nashik", &["Igatpuri", "Sinnar", "Niphad", "Dindori"]),
    ("SATARA", "Satara", &["Karad", "Wai", "Phaltan"]),
];

/// Seeds the sample country as `admin`; does nothing when a national store already exists.
pub async fn seed(app: &App, admin: &Caller) -> Result<Seeded> {
    let mut s = Seeded::default();
    let existing = app
        .list_facilities(
            admin,
            crate::domain::facility::FacilityQuery { kind: FacilityKind::NationalStore.as_i32(), ..Default::default() },
            1,
            "",
        )
        .await?;
    if !existing.items.is_empty() {
        return Ok(s);
    }
    let national =
        facility(app, admin, &mut s, "", FacilityKind::NationalStore, "IN-NVS", "National Vaccine Store").await?;
    unit(app, admin, &mut s, &national, StorageUnitKind::WalkInCooler, "WIC 1", TemperatureProfile::Refrigerated)
        .await?;
    unit(app, admin, &mut s, &national, StorageUnitKind::WalkInFreezer, "WIF 1", TemperatureProfile::Frozen).await?;
    let state =
        facility(app, admin, &mut s, &national, FacilityKind::StateStore, "MH-SVS", "Maharashtra State Vaccine Store")
            .await?;
    unit(app, admin, &mut s, &state, StorageUnitKind::WalkInCooler, "WIC 1", TemperatureProfile::Refrigerated).await?;
    unit(app, admin, &mut s, &state, StorageUnitKind::DeepFreezer, "DF 1", TemperatureProfile::Frozen).await?;
    for (code, name, blocks) in DISTRICTS {
        let dvs = facility(
            app,
            admin,
            &mut s,
            &state,
            FacilityKind::DistrictStore,
            &format!("MH-{code}-DVS"),
            &format!("{name} District Vaccine Store"),
        )
        .await?;
        unit(app, admin, &mut s, &dvs, StorageUnitKind::Ilr, "ILR 1", TemperatureProfile::Refrigerated).await?;
        unit(app, admin, &mut s, &dvs, StorageUnitKind::Ilr, "ILR 2", TemperatureProfile::Refrigerated).await?;
        unit(app, admin, &mut s, &dvs, StorageUnitKind::DeepFreezer, "DF 1", TemperatureProfile::Frozen).await?;
        for block in *blocks {
            let ccp_code = format!("MH-{code}-{}-PHC", block.to_uppercase());
            let ccp =
                facility(app, admin, &mut s, &dvs, FacilityKind::ColdChainPoint, &ccp_code, &format!("PHC {block}"))
                    .await?;
            unit(app, admin, &mut s, &ccp, StorageUnitKind::Ilr, "ILR 1", TemperatureProfile::Refrigerated).await?;
            unit(
                app,
                admin,
                &mut s,
                &ccp,
                StorageUnitKind::VaccineCarrier,
                "Carrier 1",
                TemperatureProfile::Refrigerated,
            )
            .await?;
            facility(
                app,
                admin,
                &mut s,
                &ccp,
                FacilityKind::SessionSite,
                &format!("{ccp_code}-SC1"),
                &format!("Sub-centre {block} 1"),
            )
            .await?;
        }
    }
    let today = chrono::Utc::now().date_naive();
    for (i, p) in PRODUCTS.iter().enumerate() {
        let product = app
            .create_product(
                admin,
                "",
                ProductInput {
                    code: p.code.into(),
                    name: p.name.into(),
                    vaccine: p.vaccine.into(),
                    doses_per_vial: p.doses,
                    presentation: p.presentation.as_i32(),
                    vvm_type: p.vvm.as_i32(),
                    temperature_profile: p.profile.as_i32(),
                    acceptable_wastage_bp: 0,
                    multi_dose_vial_policy: p.mdvp,
                    gtins: vec![p.gtin.into()],
                    active: true,
                },
            )
            .await?;
        s.products += 1;
        // Three lots per product: one expiring soon (for expiry alerts), two with long shelf life.
        for (n, months) in [(1, 2u32), (2, 11), (3, 20)] {
            let expiry =
                today.checked_add_months(chrono::Months::new(months + u32::try_from(i).unwrap_or(0))).unwrap_or(today);
            use chrono::Datelike as _;
            app.create_lot(
                admin,
                "",
                LotInput {
                    product_id: product.id.clone(),
                    gtin: p.gtin.into(),
                    lot_number: format!("{}{:02}{n}", p.code, expiry.month()),
                    manufacturer: p.manufacturer.into(),
                    expiry: Some((
                        expiry.year(),
                        i32::try_from(expiry.month()).unwrap_or(1),
                        i32::try_from(expiry.day()).unwrap_or(1),
                    )),
                },
            )
            .await?;
            s.lots += 1;
        }
    }
    Ok(s)
}

async fn facility(
    app: &App,
    admin: &Caller,
    s: &mut Seeded,
    parent: &str,
    kind: FacilityKind,
    code: &str,
    name: &str,
) -> Result<String> {
    let f = app
        .create_facility(
            admin,
            "",
            FacilityInput {
                parent_id: parent.into(),
                kind: kind.as_i32(),
                code: code.into(),
                name: name.into(),
                ..Default::default()
            },
        )
        .await?;
    s.facilities += 1;
    Ok(f.id)
}

async fn unit(
    app: &App,
    admin: &Caller,
    s: &mut Seeded,
    facility_id: &str,
    kind: StorageUnitKind,
    name: &str,
    profile: TemperatureProfile,
) -> Result<()> {
    app.create_storage_unit(
        admin,
        "",
        StorageUnitInput {
            facility_id: facility_id.into(),
            kind: kind.as_i32(),
            name: name.into(),
            temperature_profile: profile.as_i32(),
            capacity_litres: 0.0,
            active: true,
        },
    )
    .await?;
    s.storage_units += 1;
    Ok(())
}

/// Issues a fresh admin token for the demo banner and returns it with its caller.
pub async fn demo_admin(app: &App) -> Result<(IssuedToken, Caller)> {
    let new = crate::domain::NewToken::parse(crate::domain::Role::Admin.as_i32(), "", "", "demo admin")?;
    let issued = app.create_token_local(&new).await?;
    let caller = app.authenticate(&issued.secret).await?;
    Ok((issued, caller))
}
