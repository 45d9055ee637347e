//! Form plumbing of the desk: the submitted values (so a refused form comes back filled in), the
//! refusal shown beside its field, and the inputs every form uses.

use std::fmt::Write as _;

use axum::http::StatusCode;

use super::super::i18n::Strings;
use super::super::page::{error_text, esc, num};
use super::Desk;
use crate::app::stock::LotRef;
use crate::domain::stock::{AdjustmentReason, DiscrepancyReason, StockItem};
use crate::error::{Error, Result};

/// The values of a form by field name, in the order sent: what was submitted, or a new form's
/// defaults. Line fields are named `lines[i].name`, as the App names them in its errors.
#[derive(Debug, Default, Clone)]
pub(super) struct Fields(Vec<(String, String)>);

impl Fields {
    /// The submitted pairs.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Fields {
        Fields(pairs)
    }

    /// A field's value ("" when absent).
    pub fn get(&self, k: &str) -> &str {
        self.0.iter().find(|(n, _)| n == k).map_or("", |(_, v)| v.as_str())
    }

    /// A field's value, trimmed.
    pub fn trimmed(&self, k: &str) -> &str {
        self.get(k).trim()
    }

    /// Sets (or replaces) a field.
    pub fn set(&mut self, k: impl Into<String>, v: impl Into<String>) {
        let (k, v) = (k.into(), v.into());
        match self.0.iter_mut().find(|(n, _)| *n == k) {
            Some(slot) => slot.1 = v,
            None => self.0.push((k, v)),
        }
    }

    /// Every value of a repeated field (checkboxes).
    pub fn all<'a>(&'a self, k: &'a str) -> impl Iterator<Item = &'a str> {
        self.0.iter().filter(move |(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    /// A whole number; blank is 0. The error names the field, so the form marks it.
    pub fn int(&self, k: &str) -> Result<i64> {
        match self.trimmed(k) {
            "" => Ok(0),
            s => s.parse::<i64>().map_err(|_| Error::invalid(k, "must be a whole number")),
        }
    }

    /// The line numbers present in the form (from `lines[i].…` names), in order.
    pub fn rows(&self) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .0
            .iter()
            .filter_map(|(n, _)| n.strip_prefix("lines[")?.split_once(']')?.0.parse::<usize>().ok())
            .filter(|i| *i < 1000)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// A line field's value.
    pub fn line(&self, i: usize, name: &str) -> &str {
        self.trimmed(&line_key(i, name))
    }

    /// A line field as a whole number (blank is 0).
    pub fn line_int(&self, i: usize, name: &str) -> Result<i64> {
        self.int(&line_key(i, name))
    }

    /// Whether every named field of a line is blank or zero (an unused line, left out).
    pub fn line_blank(&self, i: usize, names: &[&str]) -> bool {
        names.iter().all(|n| matches!(self.line(i, n), "" | "0"))
    }

    /// The lot a line names: a scanned code when one was scanned, else the picked stock.
    pub fn line_lot(&self, i: usize) -> LotRef {
        let scan = self.line(i, "scan");
        if !scan.is_empty() {
            return LotRef::Scanned(scan.to_owned());
        }
        LotRef::Id(split_stock(self.line(i, "stock")).1.to_owned())
    }

    /// The unit a line's picked stock is in ("" when the line was scanned or names none).
    pub fn line_stock_unit(&self, i: usize) -> &str {
        split_stock(self.line(i, "stock")).0
    }
}

/// The name of a line field.
pub(super) fn line_key(i: usize, name: &str) -> String {
    format!("lines[{i}].{name}")
}

/// A (unit, lot) choice travels as `unit:lot`.
pub(super) fn stock_value(unit: &str, lot: &str) -> String {
    format!("{unit}:{lot}")
}

fn split_stock(v: &str) -> (&str, &str) {
    v.split_once(':').unwrap_or(("", v))
}

/// Why a form was not saved, and which field it was about (then marked and described).
#[derive(Debug, Default, Clone)]
pub(super) struct Problem {
    /// The sentence shown.
    pub message: String,
    /// The form field the error names ("" = the form as a whole).
    pub field: String,
}

impl Problem {
    /// A refusal of the App, with its field renamed to the form's: the App numbers only the lines
    /// it was given, `rows[k]` is the form line of its line `k`.
    pub fn from_error(t: &Strings, e: Error, rows: &[usize]) -> (StatusCode, Problem) {
        let field = match &e {
            Error::InvalidArgument { field, .. } => form_field(field, rows),
            _ => String::new(),
        };
        let detail = match &e {
            Error::InvalidArgument { message, reason, .. } => {
                let what = match line_of(&field) {
                    Some(i) => format!("{} {}", t.line, i + 1),
                    None => field.clone(),
                };
                let why =
                    if *reason == crate::error::reason::INVALID_FIELD { String::new() } else { format!(" ({reason})") };
                Some(format!("{what}: {message}{why}"))
            }
            _ => None,
        };
        let (code, msg) = error_text(t, e);
        let code = if code == StatusCode::OK { StatusCode::BAD_REQUEST } else { code };
        (code, Problem { message: format!("{} {}", t.form_refused, detail.unwrap_or(msg)), field })
    }

    /// The attributes of an input: marked invalid and described by the notice when the refusal
    /// is about it.
    pub fn attrs(&self, name: &str) -> &'static str {
        if self.is_about(name) { r#" aria-invalid="true" aria-describedby="form-error" autofocus"# } else { "" }
    }

    /// Whether the refusal is about this input (or the whole line or group it belongs to).
    pub fn is_about(&self, name: &str) -> bool {
        !self.field.is_empty() && (self.field == name || name.starts_with(&format!("{}.", self.field)))
    }

    /// ` open` for a `<details>` holding any of `names` when the refusal is about one of them, so
    /// the marked field is not hidden in a collapsed section.
    pub fn open_for(&self, names: &[String]) -> &'static str {
        if names.iter().any(|n| self.is_about(n)) { " open" } else { "" }
    }

    /// Whether a line holds the field the refusal is about.
    pub fn on_line(&self, i: usize) -> bool {
        line_of(&self.field) == Some(i)
    }

    /// The notice above the form (nothing when there was no refusal).
    pub fn notice(&self) -> String {
        if self.message.is_empty() {
            String::new()
        } else {
            format!(r#"<p id="form-error" class="notice error" role="alert">✖ {}</p>"#, esc(&self.message))
        }
    }
}

/// `session_report.lines[2].x` (the App's name for line 2 it was given) → `lines[rows[2]].x`.
fn form_field(field: &str, rows: &[usize]) -> String {
    let f = field.strip_prefix("session_report.").unwrap_or(field);
    if let Some(rest) = f.strip_prefix("lines[")
        && let Some((n, tail)) = rest.split_once(']')
        && let Ok(k) = n.parse::<usize>()
    {
        let i = rows.get(k).copied().unwrap_or(k);
        // The form names a line's lot by its stock choice or its scan.
        let tail = match tail {
            ".lot_id" => ".stock",
            ".scanned_code" => ".scan",
            other => other,
        };
        return format!("lines[{i}]{tail}");
    }
    f.to_owned()
}

/// The form line a field belongs to.
fn line_of(field: &str) -> Option<usize> {
    field.strip_prefix("lines[")?.split_once(']')?.0.parse().ok()
}

/// An id for a field name (`lines[2].vials` → `lines-2-vials`).
pub(super) fn id_of(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect()
}

/// A whole-number input: numeric keyboard on phones, never negative.
pub(super) fn num_field(v: &Fields, p: &Problem, name: &str, label: &str, required: bool) -> String {
    let id = id_of(name);
    format!(
        r#"<div class="f"><label for="{id}">{}</label><input id="{id}" name="{}" type="number" inputmode="numeric" min="0" step="1" value="{}"{}{}></div>"#,
        esc(label),
        esc(name),
        esc(v.get(name)),
        if required { " required" } else { "" },
        p.attrs(name),
    )
}

/// A one-line text input.
pub(super) fn text_field(v: &Fields, p: &Problem, name: &str, label: &str, max: usize, required: bool) -> String {
    let id = id_of(name);
    format!(
        r#"<div class="f"><label for="{id}">{}</label><input id="{id}" name="{}" type="text" maxlength="{max}" value="{}"{}{}></div>"#,
        esc(label),
        esc(name),
        esc(v.get(name)),
        if required { " required" } else { "" },
        p.attrs(name),
    )
}

/// A date input.
pub(super) fn date_field(v: &Fields, p: &Problem, name: &str, label: &str, required: bool) -> String {
    let id = id_of(name);
    format!(
        r#"<div class="f"><label for="{id}">{}</label><input id="{id}" name="{}" type="date" value="{}"{}{}></div>"#,
        esc(label),
        esc(name),
        esc(v.get(name)),
        if required { " required" } else { "" },
        p.attrs(name),
    )
}

/// A comment box.
pub(super) fn comment_field(v: &Fields, p: &Problem, name: &str, label: &str) -> String {
    let id = id_of(name);
    format!(
        r#"<div class="f wide"><label for="{id}">{}</label><textarea id="{id}" name="{}" maxlength="1000" rows="2"{}>{}</textarea></div>"#,
        esc(label),
        esc(name),
        p.attrs(name),
        esc(v.get(name)),
    )
}

/// A choice among `options` (value, label); `blank` offers "none" first.
pub(super) fn select_field(
    v: &Fields,
    p: &Problem,
    name: &str,
    label: &str,
    options: &[(String, String)],
    blank: Option<&str>,
) -> String {
    let id = id_of(name);
    let current = v.get(name);
    let mut s = format!(
        r#"<div class="f"><label for="{id}">{}</label><select id="{id}" name="{}"{}>"#,
        esc(label),
        esc(name),
        p.attrs(name)
    );
    if let Some(b) = blank {
        let sel = if current.is_empty() { " selected" } else { "" };
        let _ = write!(s, r#"<option value=""{sel}>{}</option>"#, esc(b));
    }
    // A submitted value that is not offered stays as sent, flagged, rather than the browser
    // quietly showing the first option in its place (and that being sent next time).
    if !current.is_empty() && !options.iter().any(|(val, _)| val == current) {
        let _ = write!(s, r#"<option value="{}" selected>⚠ {}</option>"#, esc(current), esc(current));
    }
    for (val, text) in options {
        let sel = if val == current { " selected" } else { "" };
        let _ = write!(s, r#"<option value="{}"{sel}>{}</option>"#, esc(val), esc(text));
    }
    s.push_str("</select></div>");
    s
}

/// Refuses a submitted choice that is not among `options` (a stale or altered form): the form
/// comes back with the field marked instead of the value being acted on. Blank passes (whether a
/// blank is allowed is the App's to say).
pub(super) fn check_choice(
    t: &Strings,
    v: &Fields,
    name: &str,
    label: &str,
    options: &[(String, String)],
) -> std::result::Result<(), Problem> {
    let current = v.get(name);
    if current.is_empty() || options.iter().any(|(val, _)| val == current) {
        return Ok(());
    }
    Err(Problem { message: format!("{} {label} {}", t.form_refused, t.desk_not_a_choice), field: name.to_owned() })
}

/// The text field a USB or Bluetooth barcode scanner types into. The scanner's closing Enter
/// does not send the form (the script moves on to the next field instead).
pub(super) fn scan_field(v: &Fields, p: &Problem, name: &str, t: &Strings) -> String {
    let id = id_of(name);
    format!(
        r#"<div class="f wide"><label for="{id}">{}</label><input id="{id}" name="{}" type="text" class="scan" data-scan autocomplete="off" autocapitalize="off" spellcheck="false" maxlength="1000" value="{}"{}><p class="help">{}</p></div>"#,
        esc(t.scan_label),
        esc(name),
        esc(v.get(name)),
        p.attrs(name),
        esc(t.scan_help),
    )
}

/// VVM stages to choose from.
pub(super) fn vvm_options(t: &Strings) -> Vec<(String, String)> {
    vec![
        ("0".into(), t.vvm_not_recorded.into()),
        ("1".into(), format!("{} 1", t.vvm_stage)),
        ("2".into(), format!("{} 2", t.vvm_stage)),
        ("3".into(), format!("{} 3 — {}", t.vvm_stage, t.vvm_discard)),
        ("4".into(), format!("{} 4 — {}", t.vvm_stage, t.vvm_discard)),
    ]
}

/// The people's name of an adjustment reason.
pub(super) fn adjustment_word(t: &Strings, r: AdjustmentReason) -> &'static str {
    match r {
        AdjustmentReason::Expired => t.adj_expired,
        AdjustmentReason::VvmDiscardPoint => t.adj_vvm,
        AdjustmentReason::FrozenFailedShakeTest => t.adj_frozen,
        AdjustmentReason::HeatExposure => t.adj_heat,
        AdjustmentReason::Broken => t.adj_broken,
        AdjustmentReason::Contaminated => t.adj_contaminated,
        AdjustmentReason::LabelMissing => t.adj_label,
        AdjustmentReason::Recalled => t.adj_recalled,
        AdjustmentReason::Lost => t.adj_lost,
        AdjustmentReason::Stolen => t.adj_stolen,
        AdjustmentReason::Found => t.adj_found,
        AdjustmentReason::CountCorrection => t.adj_count,
        AdjustmentReason::ReturnedToSupplier => t.adj_returned,
        AdjustmentReason::Other => t.adj_other,
    }
}

/// Adjustment reasons to choose from; `discards_only` keeps those that destroy vials (a
/// session's unopened discards).
pub(super) fn adjustment_options(t: &Strings, discards_only: bool) -> Vec<(String, String)> {
    (1..=14)
        .filter_map(AdjustmentReason::from_i32)
        .filter(|r| !discards_only || r.is_discard() || *r == AdjustmentReason::Other)
        .map(|r| {
            let sign = match r.sign() {
                1 => " (+)",
                -1 => " (−)",
                _ => " (±)",
            };
            (r.as_i32().to_string(), format!("{}{sign}", adjustment_word(t, r)))
        })
        .collect()
}

/// Why fewer vials arrived, to choose from.
pub(super) fn discrepancy_options(t: &Strings) -> Vec<(String, String)> {
    (1..=7)
        .filter_map(DiscrepancyReason::from_i32)
        .map(|r| {
            let w = match r {
                DiscrepancyReason::LostInTransit => t.disc_lost,
                DiscrepancyReason::DamagedInTransit => t.disc_damaged,
                DiscrepancyReason::FrozenInTransit => t.disc_frozen,
                DiscrepancyReason::HeatExposedInTransit => t.disc_heat,
                DiscrepancyReason::StolenInTransit => t.disc_stolen,
                DiscrepancyReason::ShortPacked => t.disc_short_packed,
                DiscrepancyReason::Other => t.disc_other,
            };
            (r.as_i32().to_string(), w.to_owned())
        })
        .collect()
}

/// The (unit, lot) balances of a store as choices: product, lot, expiry, unit, and what is usable.
pub(super) fn stock_options(t: &Strings, d: &Desk, stock: &[StockItem]) -> Vec<(String, String)> {
    let today = chrono::Utc::now().date_naive();
    let mut items: Vec<&StockItem> = stock.iter().collect();
    items.sort_by(|a, b| {
        d.product_name(&a.product_id)
            .cmp(d.product_name(&b.product_id))
            .then(a.expiry.cmp(&b.expiry))
            .then(a.lot_number.cmp(&b.lot_number))
    });
    items
        .into_iter()
        .map(|s| {
            let mut label = format!(
                "{} · {} {} · {} {} · {} · {} {}",
                d.product_name(&s.product_id),
                t.lot,
                s.lot_number,
                t.expiry,
                s.expiry,
                d.unit_name(&s.storage_unit_id),
                num(s.balance.vials),
                t.vials,
            );
            if s.balance.quarantined > 0 {
                let _ = write!(label, " ({} {})", t.quarantined, num(s.balance.quarantined));
            }
            if s.expired(today) {
                let _ = write!(label, " ({})", t.reason_expired);
            }
            (stock_value(&s.storage_unit_id, &s.lot_id), label)
        })
        .collect()
}

/// The facility's units as choices.
pub(super) fn unit_options(d: &Desk) -> Vec<(String, String)> {
    d.units.iter().map(|u| (u.id.clone(), u.name.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::ui::i18n::EN;

    #[test]
    fn line_fields_are_found_and_parsed() {
        let f = Fields::from_pairs(vec![
            ("lines[2].vials".into(), " 12 ".into()),
            ("lines[0].vials".into(), "".into()),
            ("lines[0].stock".into(), "U1:L1".into()),
            ("lines[2].scan".into(), "(01)09506000134352(10)AB".into()),
            ("note".into(), "x".into()),
        ]);
        assert_eq!(f.rows(), vec![0, 2]);
        assert_eq!(f.line_int(2, "vials").ok(), Some(12));
        assert_eq!(f.line_int(0, "vials").ok(), Some(0));
        assert!(f.line_blank(0, &["vials"]));
        assert_eq!(f.line_lot(0), LotRef::Id("L1".into()));
        assert_eq!(f.line_stock_unit(0), "U1");
        assert_eq!(f.line_lot(2), LotRef::Scanned("(01)09506000134352(10)AB".into()));
        assert!(Fields::from_pairs(vec![("n".into(), "1.5".into())]).int("n").is_err());
    }

    #[test]
    fn a_choice_not_offered_is_kept_flagged_and_refused() {
        let opts = vec![("A".to_owned(), "Site A".to_owned()), ("B".to_owned(), "Site B".to_owned())];
        let v = Fields::from_pairs(vec![("site".into(), "Z".into()), ("ok".into(), "B".into())]);
        let html = select_field(&v, &Problem::default(), "site", "Site", &opts, None);
        assert!(html.contains(r#"<option value="Z" selected>"#), "{html}");
        assert!(!html.contains(r#"value="A" selected"#), "{html}");
        let html = select_field(&v, &Problem::default(), "ok", "Site", &opts, Some("—"));
        assert!(html.contains(r#"<option value="B" selected>"#) && !html.contains(r#"value="" selected"#), "{html}");
        let p = check_choice(&EN, &v, "site", "Site", &opts).err().unwrap_or_default();
        assert_eq!(p.field, "site");
        assert!(!p.attrs("site").is_empty());
        assert!(check_choice(&EN, &v, "ok", "Site", &opts).is_ok());
        assert!(check_choice(&EN, &v, "absent", "Site", &opts).is_ok());
    }

    #[test]
    fn a_refusal_points_at_the_form_line() {
        let e = Error::invalid("session_report.lines[1].vials_opened", "must be within 0..10000000");
        let (code, p) = Problem::from_error(&EN, e, &[0, 3]);
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(p.field, "lines[3].vials_opened");
        assert!(p.message.contains("Line 4"), "{}", p.message);
        assert!(p.on_line(3));
        assert!(!p.attrs("lines[3].vials_opened").is_empty());
        assert!(p.attrs("lines[3].vials_issued").is_empty());
        let whole = Problem { field: "lines[3]".into(), ..Default::default() };
        assert!(!whole.attrs("lines[3].vials_issued").is_empty());
    }
}
