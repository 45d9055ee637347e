//! Rendering back to the two textual forms, for logs, labels and round-trip tests.

use std::fmt;

use crate::ElementString;

const GS: char = '\u{1d}';

impl ElementString {
    /// Raw form: fixed-length AIs first, then variable ones separated by GS; no symbology identifier.
    ///
    /// Round-trips through [`crate::parse`] for every value `parse` returns.
    pub fn to_raw(&self) -> String {
        let mut out = String::new();
        let elements = self.elements();
        let count = elements.len();
        for (i, (ai, value, variable)) in elements.into_iter().enumerate() {
            out.push_str(ai);
            out.push_str(&value);
            // Only a variable-length field needs a terminator, and the last one needs none.
            if variable && i.saturating_add(1) < count {
                out.push(GS);
            }
        }
        out
    }

    /// Bracketed human-readable form, e.g. `(01)09506000134352(17)271231(10)AB1234`.
    ///
    /// A `(` inside data is written `\(` so that it cannot be taken for the start of an AI.
    pub fn to_bracketed(&self) -> String {
        let mut out = String::new();
        for (ai, value, _) in self.elements() {
            out.push('(');
            out.push_str(ai);
            out.push(')');
            out.push_str(&value.replace('(', "\\("));
        }
        out
    }

    /// `(ai, data, variable-length)` in output order: fixed-length AIs first, so the raw form
    /// needs the fewest separators.
    fn elements(&self) -> Vec<(&str, String, bool)> {
        let mut v: Vec<(&str, String, bool)> = Vec::new();
        if let Some(g) = &self.gtin {
            v.push(("01", g.clone(), false));
        }
        if let Some(d) = self.production_date {
            v.push(("11", d.to_yymmdd(), false));
        }
        if let Some(d) = self.expiry {
            v.push(("17", d.to_yymmdd(), false));
        }
        if let Some(l) = &self.lot {
            v.push(("10", l.clone(), true));
        }
        if let Some(s) = &self.serial {
            v.push(("21", s.clone(), true));
        }
        if let Some(n) = self.count {
            v.push(("30", n.to_string(), true));
        }
        if let Some(n) = self.trade_item_count {
            v.push(("37", n.to_string(), true));
        }
        for (ai, value) in &self.other {
            v.push((ai, value.clone(), true));
        }
        v
    }
}

impl fmt::Display for ElementString {
    /// The bracketed form, as printed under a barcode.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_bracketed())
    }
}
