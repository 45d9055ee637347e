//! Report arithmetic: roll-up over the facility tree, wastage rates, expiry bands and CSV.
//! Inputs are plain rows from the store; nothing here touches a database.

use chrono::NaiveDate;

use super::Facility;

/// A facility in report order with its depth below the report root.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeRow {
    /// The facility.
    pub facility: Facility,
    /// Levels below the root (0 = the root).
    pub depth: i32,
}

/// Orders a subtree depth-first with children by name, keeping facilities down to `max_depth`.
pub fn tree_order(root: &Facility, mut all: Vec<Facility>, max_depth: i32) -> Vec<TreeRow> {
    all.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    let mut out = Vec::new();
    let mut stack = vec![(root.clone(), 0)];
    while let Some((f, depth)) = stack.pop() {
        if depth < max_depth {
            // Push in reverse so the alphabetically first child is visited first.
            for c in all.iter().rev().filter(|c| c.parent_id.as_deref() == Some(f.id.as_str())) {
                stack.push((c.clone(), depth + 1));
            }
        }
        out.push(TreeRow { facility: f, depth });
    }
    out
}

/// Wastage rate in basis points, rounded half up; `None` when nothing was issued.
pub fn wastage_rate_bp(doses_issued: i64, doses_administered: i64) -> Option<i32> {
    if doses_issued <= 0 {
        return None;
    }
    let wasted = (doses_issued - doses_administered).max(0) as i128;
    let bp = (wasted * 10_000 * 2 + i128::from(doses_issued)) / (2 * i128::from(doses_issued));
    i32::try_from(bp).ok()
}

/// The band of a lot expiring in `days` days.
pub fn expiry_band(days: i64) -> i32 {
    match days {
        d if d < 0 => 1,
        0..=30 => 2,
        31..=60 => 3,
        61..=90 => 4,
        _ => 5,
    }
}

/// Doses likely unused by expiry at the given daily use, rounded up.
pub fn doses_at_risk(doses: i64, avg_daily_use: f64, days_to_expiry: i64) -> i64 {
    let used = avg_daily_use * days_to_expiry.max(0) as f64;
    (doses as f64 - used).max(0.0).ceil() as i64
}

/// Days from `today` to `expiry` (negative once expired).
pub fn days_to(today: NaiveDate, expiry: NaiveDate) -> i64 {
    (expiry - today).num_days()
}

/// Writes RFC 4180 CSV with CRLF line ends.
#[derive(Debug, Default)]
pub struct Csv {
    out: String,
}

impl Csv {
    /// A CSV with this header row.
    pub fn new(header: &[&str]) -> Self {
        let mut c = Csv::default();
        c.row(header.iter().map(|s| (*s).to_owned()));
        c
    }

    /// Appends one row, quoting cells that need it.
    pub fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        for (i, cell) in cells.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            if cell.contains([',', '"', '\r', '\n']) {
                self.out.push('"');
                self.out.push_str(&cell.replace('"', "\"\""));
                self.out.push('"');
            } else {
                self.out.push_str(&cell);
            }
        }
        self.out.push_str("\r\n");
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wastage_rates_round_half_up() {
        assert_eq!(wastage_rate_bp(0, 0), None);
        assert_eq!(wastage_rate_bp(100, 93), Some(700));
        assert_eq!(wastage_rate_bp(3, 2), Some(3333));
        assert_eq!(wastage_rate_bp(8, 7), Some(1250));
        assert_eq!(wastage_rate_bp(3, 1), Some(6667));
        assert_eq!(wastage_rate_bp(10, 12), Some(0), "more given than issued is no wastage");
    }

    #[test]
    fn bands_and_risk() {
        assert_eq!(
            (expiry_band(-1), expiry_band(0), expiry_band(30), expiry_band(31), expiry_band(90), expiry_band(91)),
            (1, 2, 2, 3, 4, 5)
        );
        assert_eq!(doses_at_risk(100, 1.5, 30), 55);
        assert_eq!(doses_at_risk(100, 10.0, 30), 0);
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let mut c = Csv::new(&["a", "b"]);
        c.row(["x,y".to_owned(), "say \"hi\"".to_owned()]);
        assert_eq!(c.finish(), "a,b\r\n\"x,y\",\"say \"\"hi\"\"\"\r\n");
    }
}

/// Session figures of one facility and product, as the store sums them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The facility's path (rolled up by prefix).
    pub facility_path: String,
    /// The product.
    pub product_id: String,
    /// Unreversed session reports.
    pub sessions: i64,
    /// Doses issued to sessions.
    pub doses_issued: i64,
    /// Doses given.
    pub doses_administered: i64,
    /// Doses in unopened vials discarded at sessions.
    pub unopened_discard_doses: i64,
}
