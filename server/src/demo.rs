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
    /// Ledger entries written (receipts, shipments, sessions).
    pub ledger_entries: usize,
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
    let mut net = Network::default();
    let u =
        unit(app, admin, &mut s, &national, StorageUnitKind::WalkInCooler, "WIC 1", TemperatureProfile::Refrigerated)
            .await?;
    net.fridge.insert(national.clone(), u);
    let u = unit(app, admin, &mut s, &national, StorageUnitKind::WalkInFreezer, "WIF 1", TemperatureProfile::Frozen)
        .await?;
    net.freezer.insert(national.clone(), u);
    let state =
        facility(app, admin, &mut s, &national, FacilityKind::StateStore, "MH-SVS", "Maharashtra State Vaccine Store")
            .await?;
    let u = unit(app, admin, &mut s, &state, StorageUnitKind::WalkInCooler, "WIC 1", TemperatureProfile::Refrigerated)
        .await?;
    net.fridge.insert(state.clone(), u);
    let u = unit(app, admin, &mut s, &state, StorageUnitKind::DeepFreezer, "DF 1", TemperatureProfile::Frozen).await?;
    net.freezer.insert(state.clone(), u);
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
        let u = unit(app, admin, &mut s, &dvs, StorageUnitKind::Ilr, "ILR 1", TemperatureProfile::Refrigerated).await?;
        net.fridge.insert(dvs.clone(), u);
        unit(app, admin, &mut s, &dvs, StorageUnitKind::Ilr, "ILR 2", TemperatureProfile::Refrigerated).await?;
        let u =
            unit(app, admin, &mut s, &dvs, StorageUnitKind::DeepFreezer, "DF 1", TemperatureProfile::Frozen).await?;
        net.freezer.insert(dvs.clone(), u);
        net.districts.push(dvs.clone());
        for block in *blocks {
            let ccp_code = format!("MH-{code}-{}-PHC", block.to_uppercase());
            let ccp =
                facility(app, admin, &mut s, &dvs, FacilityKind::ColdChainPoint, &ccp_code, &format!("PHC {block}"))
                    .await?;
            let u =
                unit(app, admin, &mut s, &ccp, StorageUnitKind::Ilr, "ILR 1", TemperatureProfile::Refrigerated).await?;
            net.fridge.insert(ccp.clone(), u);
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
            let site = facility(
                app,
                admin,
                &mut s,
                &ccp,
                FacilityKind::SessionSite,
                &format!("{ccp_code}-SC1"),
                &format!("Sub-centre {block} 1"),
            )
            .await?;
            net.ccps.push((dvs.clone(), ccp.clone(), site));
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
        let mut product_lots = Vec::new();
        // Three lots per product: one expiring soon (for expiry alerts), two with long shelf life.
        for (n, months) in [(1, 2u32), (2, 11), (3, 20)] {
            let expiry =
                today.checked_add_months(chrono::Months::new(months + u32::try_from(i).unwrap_or(0))).unwrap_or(today);
            use chrono::Datelike as _;
            let lot = app
                .create_lot(
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
            product_lots.push(lot.id);
        }
        net.products.push((product.id.clone(), p.profile, product_lots));
    }
    move_stock(app, admin, &mut s, &national, &state, &net).await?;
    Ok(s)
}

/// Where the seeded stock lives, collected while the tree is built.
#[derive(Debug, Default)]
struct Network {
    fridge: std::collections::HashMap<String, String>,
    freezer: std::collections::HashMap<String, String>,
    districts: Vec<String>,
    /// (district, cold-chain point, session site)
    ccps: Vec<(String, String, String)>,
    /// (product, profile, lots)
    products: Vec<(String, TemperatureProfile, Vec<String>)>,
}

impl Network {
    fn unit_for(&self, facility: &str, profile: TemperatureProfile) -> Option<&String> {
        let frozen = (profile == TemperatureProfile::Frozen).then(|| self.freezer.get(facility)).flatten();
        frozen.or_else(|| self.fridge.get(facility))
    }
}

/// Moves stock the way a programme does: supplier receipts at the national store, shipments down
/// to the state, districts and cold-chain points, then a few sessions. Everything goes through the
/// same use cases as the API, so the demo ledger is a real one.
async fn move_stock(
    app: &App,
    admin: &Caller,
    s: &mut Seeded,
    national: &str,
    state: &str,
    net: &Network,
) -> Result<()> {
    use crate::app::stock::{LotRef, NewShipmentLine, ReceiptLine};
    let missing = || crate::error::Error::Internal("demo network has no storage unit".into());
    let mut receipt = Vec::new();
    for (_, profile, lots) in &net.products {
        for lot in lots {
            receipt.push(ReceiptLine {
                lot: LotRef::Id(lot.clone()),
                vials: 2000,
                vvm_stage: 1,
                storage_unit_id: net.unit_for(national, *profile).ok_or_else(missing)?.clone(),
                manufacturer: String::new(),
            });
        }
    }
    let fridge = net.fridge.get(national).ok_or_else(missing)?;
    s.ledger_entries += app.receive_from_supplier(admin, "", fridge, receipt, "UNICEF SD: VAR 2026-11").await?.0.len();
    let ship = |from: String, to: String, vials: i64, first_lot_only: bool| async move {
        let lines = net
            .products
            .iter()
            .flat_map(|(_, _, lots)| lots.iter().take(if first_lot_only { 2 } else { lots.len() }))
            .map(|lot| NewShipmentLine { lot: LotRef::Id(lot.clone()), vials, source_storage_unit_id: String::new() })
            .collect();
        let sh = app.create_shipment(admin, "", &from, &to, lines, "", "", None).await?;
        let sh = app.dispatch_shipment(admin, "", &sh.id).await?;
        let dest = net.fridge.get(&to).ok_or_else(missing)?;
        let got = app.receive_shipment(admin, "", &sh.id, dest, Vec::new(), true).await?;
        Ok::<usize, crate::error::Error>(got.lines.len() * 2)
    };
    s.ledger_entries += ship(national.to_owned(), state.to_owned(), 600, false).await?;
    for d in &net.districts {
        s.ledger_entries += ship(state.to_owned(), d.clone(), 150, false).await?;
    }
    let today = chrono::Utc::now().date_naive();
    for (district, ccp, site) in &net.ccps {
        s.ledger_entries += ship(district.clone(), ccp.clone(), 25, true).await?;
        // One session at each site: 4 vials of the first product's earliest lot, 3 opened.
        let (_, _, lots) = net.products.first().ok_or_else(missing)?;
        let line = crate::domain::stock::SessionLine {
            vials_issued: 4,
            vials_opened: 3,
            unopened_vials_returned: 1,
            doses_administered: 41,
            ..Default::default()
        };
        let unit = net.fridge.get(ccp).ok_or_else(missing)?;
        let lot = LotRef::Id(lots.first().ok_or_else(missing)?.clone());
        let r = app.submit_session_report(admin, "", site, unit, today, vec![(lot, line)], "demo session").await?;
        s.ledger_entries += r.ledger_entry_ids.len();
    }
    Ok(())
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
) -> Result<String> {
    let u = app
        .create_storage_unit(
            admin,
            "",
            StorageUnitInput {
                facility_id: facility_id.into(),
                kind: kind.as_i32(),
                name: name.into(),
                temperature_profile: profile.as_i32(),
                capacity_litres: 0.0,
                active: true,
                alarm_overrides: Default::default(),
            },
        )
        .await?;
    s.storage_units += 1;
    Ok(u.id)
}

/// Issues a fresh admin token for the demo banner and returns it with its caller.
pub async fn demo_admin(app: &App) -> Result<(IssuedToken, Caller)> {
    let new = crate::domain::NewToken::parse(crate::domain::Role::Admin.as_i32(), "", "", "demo admin")?;
    let issued = app.create_token_local(&new).await?;
    let caller = app.authenticate(&issued.secret).await?;
    Ok((issued, caller))
}

/// Tokens for the pages: a district officer of the district whose fridge drifts warm (the
/// dashboard) and the depot manager of that cold-chain point (the stock desk).
pub async fn people(app: &App, admin: &Caller) -> Result<(IssuedToken, IssuedToken)> {
    use crate::domain::{NewToken, Role};
    let q =
        crate::domain::facility::FacilityQuery { kind: FacilityKind::ColdChainPoint.as_i32(), ..Default::default() };
    let ccp = app
        .list_facilities(admin, q, 1, "")
        .await?
        .items
        .into_iter()
        .next()
        .ok_or_else(|| crate::error::Error::Internal("the demo has no cold-chain point".into()))?;
    let district = ccp.parent_id.clone().unwrap_or_default();
    let dio = NewToken::parse(Role::DistrictOfficer.as_i32(), &district, "", "demo district officer")?;
    let depot = NewToken::parse(Role::DepotManager.as_i32(), &ccp.id, "", "demo depot manager")?;
    Ok((app.create_token_local(&dio).await?, app.create_token_local(&depot).await?))
}

/// Simulated loggers for the demo: one real `vaxtrace-agent` (in-process) per cold-chain point,
/// publishing to the demo's broker. The first fridge drifts warm on a compressed clock so a HEAT
/// alarm (and the quarantine of its stock) appears within a minute; the second freezes; the rest
/// are stable. Configs (with the keys, shown only once at registration) live in `dir` so a
/// restart of the demo reuses the same devices.
pub async fn start_loggers(
    app: &App,
    admin: &Caller,
    mqtt_host: &str,
    mqtt_port: u16,
    dir: &std::path::Path,
) -> Result<usize> {
    use crate::domain::telemetry::DeviceInput;
    let io = |e: std::io::Error| crate::error::Error::Internal(format!("demo loggers: {e}"));
    std::fs::create_dir_all(dir).map_err(io)?;
    let q =
        crate::domain::facility::FacilityQuery { kind: FacilityKind::ColdChainPoint.as_i32(), ..Default::default() };
    let ccps = app.list_facilities(admin, q, 100, "").await?.items;
    let mut started = 0;
    for (i, ccp) in ccps.iter().enumerate() {
        let path = dir.join(format!("{}.toml", ccp.code));
        if !path.exists() {
            let units = app.list_storage_units(admin, &ccp.id, "", false, 10, "").await?.items;
            let Some(ilr) = units.iter().find(|u| u.kind == StorageUnitKind::Ilr) else { continue };
            let input = DeviceInput {
                serial: format!("DEMO-{}", ccp.code),
                name: format!("{} logger", ccp.name),
                model: "vaxtrace-agent (simulated)".into(),
                facility_id: ccp.id.clone(),
                probes: vec![(0, ilr.id.clone(), "ILR 1".into())],
                expected_interval_secs: 600,
                unsigned_allowed: false,
                active: true,
            };
            let (device, key) = app.register_device(admin, "", input).await?;
            let (scenario, start, speed) = match i {
                0 => ("warm_drift", "now - 20h", 2400),
                1 => ("freeze", "now - 12h", 1200),
                _ => ("stable", "now - 1h", 60),
            };
            let key_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let data = dir.join(&ccp.code);
            let config = format!(
                "device_id = \"{}\"\ndata_dir = \"{}\"\ninterval = \"10m\"\n[mqtt]\nurl = \"mqtt://{mqtt_host}:{mqtt_port}\"\n\
                 [uplink]\nkey_hex = \"{key_hex}\"\n[simulator]\nseed = {i}\nspeed = {speed}\nstart = \"{start}\"\n\
                 [[probes]]\nindex = 0\nlabel = \"ILR 1\"\nsource = {{ kind = \"simulator\", scenario = \"{scenario}\" }}\n",
                device.id,
                data.display()
            );
            std::fs::write(&path, config).map_err(io)?;
        }
        let text = std::fs::read_to_string(&path).map_err(io)?;
        // A restarted demo may have a new broker port: point the saved config at it.
        let text = text
            .lines()
            .map(|l| {
                if l.starts_with("url = ") { format!("url = \"mqtt://{mqtt_host}:{mqtt_port}\"") } else { l.to_owned() }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let cfg = vaxtrace_agent::config::Config::parse(&text)
            .map_err(|e| crate::error::Error::Internal(format!("demo logger config: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = vaxtrace_agent::agent::run(cfg, std::future::pending::<()>()).await {
                tracing::warn!(error = %e, "demo logger stopped");
            }
        });
        started += 1;
    }
    Ok(started)
}
