//! A generated country in the onboarding CSV formats, of any size: a national store, states,
//! districts and cold-chain points with storage units, products with GTINs, lots with opening
//! balances at the national store, district policies, one logger per cold-chain point (up to a
//! count) and district officer tokens. Deterministic, so two generations give the same files.

use std::collections::BTreeMap;
use std::path::Path;

/// How big a country to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Facilities in all (at least 1 + states + districts).
    pub facilities: usize,
    /// States.
    pub states: usize,
    /// Districts per state.
    pub districts_per_state: usize,
    /// Products (every fifth one frozen).
    pub products: usize,
    /// Lots (spread over the products).
    pub lots: usize,
    /// Loggers, one per cold-chain point, at most one per point.
    pub devices: usize,
}

impl Size {
    /// The country: 10,000 facilities, 20 products, 2,000 lots, 5,000 loggers.
    pub const NATIONAL: Size =
        Size { facilities: 10_000, states: 20, districts_per_state: 10, products: 20, lots: 2_000, devices: 5_000 };
    /// A small one for error and CLI tests.
    pub const SMALL: Size =
        Size { facilities: 40, states: 2, districts_per_state: 2, products: 3, lots: 6, devices: 5 };
}

/// The files of a generated country: file name → data rows (without the header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Country {
    /// Rows per file name.
    pub files: BTreeMap<&'static str, Vec<Vec<String>>>,
}

/// The GS1 check digit of 13 digits.
fn check_digit(digits: &str) -> u32 {
    let sum: u32 =
        digits.bytes().rev().enumerate().map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 }).sum();
    (10 - sum % 10) % 10
}

/// A valid GTIN-14 under GS1's documentation prefix.
pub fn gtin(n: usize) -> String {
    let body = format!("0950600{:06}", n % 1_000_000);
    format!("{body}{}", check_digit(&body))
}

fn row(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// The unit that holds a product at a store: the cooler, or the freezer for frozen products.
fn store_unit(frozen: bool) -> &'static str {
    if frozen { "WIF 1" } else { "WIC 1" }
}

impl Country {
    /// Generates a country of `size`.
    pub fn generate(size: Size) -> Country {
        let mut files: BTreeMap<&'static str, Vec<Vec<String>>> = BTreeMap::new();
        let mut fac =
            vec![row(&["NAT", "", "national_store", "National Vaccine Store", "", "", "9.05", "7.49", "true"])];
        let mut units = vec![
            row(&["NAT", "WIC 1", "walk_in_cooler", "refrigerated", "20000", "true"]),
            row(&["NAT", "WIF 1", "walk_in_freezer", "frozen", "15000", "true"]),
        ];
        let mut districts = Vec::new();
        for s in 1..=size.states {
            let sc = format!("S{s:02}");
            fac.push(row(&[&sc, "NAT", "state_store", &format!("State {s} Vaccine Store"), "", "", "", "", "true"]));
            units.push(row(&[&sc, "WIC 1", "walk_in_cooler", "refrigerated", "8000", "true"]));
            units.push(row(&[&sc, "WIF 1", "walk_in_freezer", "frozen", "4000", "true"]));
            for d in 1..=size.districts_per_state {
                let dc = format!("{sc}-D{d:02}");
                let name = format!("District {s}.{d} Vaccine Store");
                fac.push(row(&[&dc, &sc, "district_store", &name, "", "", "", "", "true"]));
                units.push(row(&[&dc, "ILR 1", "ilr", "refrigerated", "240", "true"]));
                units.push(row(&[&dc, "DF 1", "deep_freezer", "frozen", "200", "true"]));
                districts.push(dc);
            }
        }
        let mut ccps = Vec::new();
        let mut i = 0;
        while fac.len() < size.facilities && !districts.is_empty() {
            let dc = &districts[i % districts.len()];
            let code = format!("{dc}-C{:05}", i + 1);
            // Coordinates on some points, with decimals that must survive a round trip.
            let (lat, lon) = if i % 3 == 0 {
                (format!("{:.4}", 4.0 + (i % 900) as f64 / 100.0), format!("{:.4}", 3.0 + (i % 1100) as f64 / 100.0))
            } else {
                (String::new(), String::new())
            };
            let active = if i % 97 == 96 { "false" } else { "true" };
            let name = format!("Health Centre {}", i + 1);
            fac.push(row(&[&code, dc, "cold_chain_point", &name, "", "", &lat, &lon, active]));
            units.push(row(&[&code, "ILR 1", "ilr", "refrigerated", "100", "true"]));
            ccps.push(code);
            i += 1;
        }
        let mut products = Vec::new();
        let mut frozen = Vec::new();
        for p in 1..=size.products {
            let is_frozen = p % 5 == 0;
            frozen.push(is_frozen);
            let (profile, presentation) =
                if is_frozen { ("frozen", "liquid") } else { ("refrigerated", "lyophilised") };
            products.push(row(&[
                &format!("P{p:02}"),
                &format!("Vaccine {p} 10-dose"),
                &format!("Antigen {p}"),
                "10",
                presentation,
                "vvm14",
                profile,
                "",
                if p % 2 == 0 { "true" } else { "false" },
                &gtin(p),
                "true",
            ]));
        }
        let mut lots = Vec::new();
        let mut balances = Vec::new();
        let base = chrono::NaiveDate::from_ymd_opt(2027, 1, 1).unwrap_or_default();
        for l in 0..size.lots {
            let p = l % size.products.max(1) + 1;
            let pc = format!("P{p:02}");
            let number = format!("L{l:05}");
            let expiry = base + chrono::Days::new((l % 700) as u64);
            let g = if l % 2 == 0 { gtin(p) } else { String::new() };
            lots.push(row(&[&pc, &number, &expiry.format("%Y-%m-%d").to_string(), &g, "Maker & Sons, Ltd"]));
            let unit = store_unit(frozen.get(p - 1).copied().unwrap_or(false));
            balances.push(row(&["NAT", unit, &pc, &number, &(1000 + l).to_string()]));
        }
        let mut policies = Vec::new();
        for dc in &districts {
            for p in 1..=size.products.min(5) {
                policies.push(row(&[dc, &format!("P{p:02}"), "500", &(2000 + p * 100).to_string()]));
            }
        }
        let mut devices = Vec::new();
        let mut probes = Vec::new();
        for (n, code) in ccps.iter().take(size.devices).enumerate() {
            let serial = format!("LOG-{:05}", n + 1);
            devices.push(row(&[&serial, code, &format!("{code} ILR"), "vaxtrace-agent", "300", "false", "true", ""]));
            probes.push(row(&[&serial, "0", "ILR 1", "fridge"]));
        }
        let mut tokens = vec![row(&["admin", "", "", "national admin"])];
        for dc in &districts {
            tokens.push(row(&["district_officer", dc, "", &format!("DIO {dc}")]));
        }
        files.insert("facilities.csv", fac);
        files.insert("storage_units.csv", units);
        files.insert("products.csv", products);
        files.insert("lots.csv", lots);
        files.insert("opening_balances.csv", balances);
        files.insert("policies.csv", policies);
        files.insert("devices.csv", devices);
        files.insert("probes.csv", probes);
        files.insert("tokens.csv", tokens);
        Country { files }
    }

    /// Rows of one file.
    pub fn rows(&mut self, file: &'static str) -> &mut Vec<Vec<String>> {
        self.files.entry(file).or_default()
    }

    /// Appends a row to a file and returns its line number (the header is line 1).
    pub fn push(&mut self, file: &'static str, values: &[&str]) -> u64 {
        let rows = self.rows(file);
        rows.push(row(values));
        u64::try_from(rows.len()).unwrap_or(0) + 1
    }

    /// Data rows in all files.
    pub fn len(&self) -> usize {
        self.files.values().map(Vec::len).sum()
    }

    /// True without rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the files, with the format's header, into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        use vaxtrace_server::onboard::format;
        for (name, rows) in &self.files {
            let spec = format::FILES.iter().find(|s| s.name == *name).ok_or_else(|| std::io::Error::other(*name))?;
            // Rows may leave out trailing optional columns; the CSV writer drops a short row.
            let rows = rows.iter().map(|r| {
                let mut r = r.clone();
                r.resize(r.len().max(spec.columns.len()), String::new());
                r
            });
            std::fs::write(dir.join(name), format::write_csv(spec.columns, rows))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtins_are_valid_and_sizes_hold() {
        assert_eq!(gtin(1).len(), 14);
        assert!(vaxtrace_gs1_ok(&gtin(7)));
        let c = Country::generate(Size::SMALL);
        assert_eq!(c.files["facilities.csv"].len(), 40);
        assert_eq!(c.files["devices.csv"].len(), 5);
    }

    fn vaxtrace_gs1_ok(g: &str) -> bool {
        vaxtrace_server::domain::validate::gtin("g", g).is_ok()
    }
}
