//! Reports over the ledger: stock on hand (rolled up the tree), wastage, expiry risk, and CSV.

use std::collections::HashMap;

use chrono::{DateTime, Days, NaiveDate, Utc};

use super::App;
use crate::domain::epcis;
use crate::domain::report::{self as rp, Csv, TreeRow};
use crate::domain::stock::{EntryFilter, ShipmentState, StockItem};
use crate::domain::{Action, Caller, Facility, FacilityKind, Page, PageRequest, Product, validate};
use crate::error::{Error, Result};

/// Grouping dimensions of the stock-on-hand report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Grouping {
    /// One row per facility (rolled up).
    pub facility: bool,
    /// One row per product.
    pub product: bool,
    /// One row per lot.
    pub lot: bool,
}

/// One stock-on-hand row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StockRow {
    /// Facility (FACILITY grouping).
    pub facility: Option<TreeRow>,
    /// Product.
    pub product: Option<Product>,
    /// Lot id, number and expiry (LOT grouping).
    pub lot: Option<(String, String, NaiveDate)>,
    /// Usable vials and doses.
    pub available: (i64, i64),
    /// Quarantined, not expired.
    pub quarantined: (i64, i64),
    /// Expired, still on hand.
    pub expired: (i64, i64),
    /// Dispatched to the row's subtree, not yet received.
    pub in_transit: (i64, i64),
    /// The facility's own policy (min, max).
    pub policy: Option<(i64, i64)>,
}

/// One wastage row.
#[derive(Debug, Clone, PartialEq)]
pub struct WastageRow {
    /// Facility (with grouping).
    pub facility: Option<TreeRow>,
    /// The product.
    pub product: Product,
    /// Session reports counted.
    pub sessions: i64,
    /// Doses issued.
    pub doses_issued: i64,
    /// Doses given.
    pub doses_administered: i64,
    /// Rate, basis points.
    pub rate_bp: Option<i32>,
    /// Wasted in opened vials.
    pub opened_vial_doses: i64,
    /// Discarded unopened at sessions.
    pub unopened_vial_doses: i64,
    /// Lost in storage and transport.
    pub store_doses: i64,
}

/// One expiry-risk row.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpiryRow {
    /// The facility.
    pub facility: Facility,
    /// The product.
    pub product: Product,
    /// Lot id, number, expiry.
    pub lot: (String, String, NaiveDate),
    /// Days to expiry.
    pub days: i64,
    /// Band number (as in the API).
    pub band: i32,
    /// Vials and doses on hand.
    pub on_hand: (i64, i64),
    /// Quarantined vials.
    pub quarantined_vials: i64,
    /// Mean daily use over 90 days, doses.
    pub avg_daily_use: f64,
    /// Doses likely unused by expiry.
    pub doses_at_risk: i64,
}

fn page_of<T: Clone>(rows: Vec<T>, page: &PageRequest) -> Result<Page<T>> {
    let start = match &page.after {
        Some(a) => a.parse::<usize>().map_err(|_| Error::InvalidPageToken)?,
        None => 0,
    };
    let keyed: Vec<(String, T)> =
        rows.into_iter().enumerate().skip(start).map(|(i, r)| ((i + 1).to_string(), r)).collect();
    let keyed = keyed.into_iter().take(page.size + 1).collect();
    let p = page.finish(keyed, |(k, _)| k);
    Ok(Page { items: p.items.into_iter().map(|(_, r)| r).collect(), next_page_token: p.next_page_token })
}

impl App {
    /// The report root: the named facility (in scope), or the top of the caller's scope.
    async fn report_root(&self, caller: &Caller, facility_id: &str) -> Result<Facility> {
        caller.require(Action::ReadStock)?;
        if let Some(id) = validate::optional_id("facility_id", facility_id)? {
            return match self.store.get_facility(&id).await? {
                Some(f) if caller.covers(&f.path) => Ok(f),
                Some(_) => Err(Error::PermissionDenied),
                None => Err(caller.not_found("FACILITY_NOT_FOUND", "facility")),
            };
        }
        let top = caller.scope_path.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_owned();
        if !top.is_empty() {
            return self
                .store
                .get_facility(&top)
                .await?
                .ok_or_else(|| Error::Internal("scope facility vanished".into()));
        }
        let q =
            crate::domain::facility::FacilityQuery { kind: FacilityKind::NationalStore.as_i32(), ..Default::default() };
        let roots = self.list_facilities(caller, q, 1, "").await?;
        roots
            .items
            .into_iter()
            .next()
            .ok_or_else(|| Error::not_found("FACILITY_NOT_FOUND", "there is no national store yet"))
    }

    async fn products_by_id(&self, caller: &Caller) -> Result<HashMap<String, Product>> {
        let mut out = HashMap::new();
        let mut token = String::new();
        loop {
            let page = self.list_products(caller, true, 1000, &token).await?;
            out.extend(page.items.into_iter().map(|p| (p.id.clone(), p)));
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }

    async fn tree(&self, root: &Facility, depth: i32) -> Result<Vec<TreeRow>> {
        Ok(rp::tree_order(root, self.store.subtree_facilities(&root.path).await?, depth))
    }

    /// Stock on hand under a facility, grouped and rolled up.
    pub async fn stock_on_hand(
        &self,
        caller: &Caller,
        facility_id: &str,
        group: Grouping,
        depth: i32,
        product_id: &str,
        as_of: Option<DateTime<Utc>>,
        include_zero: bool,
    ) -> Result<Vec<StockRow>> {
        let root = self.report_root(caller, facility_id).await?;
        let product_id = validate::optional_id("product_id", product_id)?;
        if !(0..=5).contains(&depth) {
            return Err(Error::invalid("facility_grouping.depth", "must be within 0..5"));
        }
        let products = self.products_by_id(caller).await?;
        let today = as_of.unwrap_or_else(Utc::now).date_naive();
        let stock = self.store.subtree_stock(&root.path, product_id.as_deref(), as_of).await?;
        let transit = if as_of.is_none() { self.store.in_transit(&root.path).await? } else { Vec::new() };
        let tree: Vec<TreeRow> = if group.facility {
            self.tree(&root, depth.max(1)).await?
        } else {
            vec![TreeRow { facility: root.clone(), depth: 0 }]
        };
        let mut policies: HashMap<(String, String), (i64, i64)> = HashMap::new();
        if group.facility && group.product && !group.lot {
            let mut token = String::new();
            loop {
                let page = self.list_policies(caller, "", "", "", 1000, &token).await?;
                policies.extend(
                    page.items.into_iter().map(|p| ((p.facility_id, p.product_id), (p.min_doses, p.max_doses))),
                );
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        type Key = (usize, Option<String>, Option<String>);
        let mut rows: HashMap<Key, StockRow> = HashMap::new();
        let key_of = |t: usize, item_product: &str, lot: &str| -> Key {
            (
                t,
                group.product.then(|| item_product.to_owned()).or_else(|| group.lot.then(|| item_product.to_owned())),
                group.lot.then(|| lot.to_owned()),
            )
        };
        for (t, row) in tree.iter().enumerate() {
            for (item, path) in &stock {
                if !path.starts_with(&row.facility.path) {
                    continue;
                }
                let r = rows.entry(key_of(t, &item.product_id, &item.lot_id)).or_default();
                let dpv = item.doses_per_vial;
                let StockItem { balance, .. } = item;
                if item.expired(today) {
                    r.expired.0 += balance.vials;
                } else {
                    r.available.0 += balance.available();
                    r.quarantined.0 += balance.quarantined;
                }
                r.available.1 = r.available.0 * dpv;
                r.quarantined.1 = r.quarantined.0 * dpv;
                r.expired.1 = r.expired.0 * dpv;
                if group.lot {
                    r.lot = Some((item.lot_id.clone(), item.lot_number.clone(), item.expiry));
                }
            }
            for (s, from_path, to_path) in &transit {
                if s.state != ShipmentState::Dispatched
                    || !to_path.starts_with(&row.facility.path)
                    || from_path.starts_with(&row.facility.path)
                {
                    continue;
                }
                for l in &s.lines {
                    if product_id.as_ref().is_some_and(|p| *p != l.product_id) {
                        continue;
                    }
                    let r = rows.entry(key_of(t, &l.product_id, &l.lot_id)).or_default();
                    r.in_transit.0 += l.vials;
                    r.in_transit.1 += l.vials * l.doses_per_vial;
                }
            }
        }
        let mut out: Vec<(usize, StockRow)> = rows
            .into_iter()
            .map(|((t, product, _), mut r)| {
                r.facility = group.facility.then(|| tree[t].clone());
                r.product = product.as_ref().and_then(|p| products.get(p).cloned());
                if let (Some(f), Some(p)) = (&r.facility, &r.product) {
                    r.policy = policies.get(&(f.facility.id.clone(), p.id.clone())).copied();
                }
                (t, r)
            })
            .filter(|(_, r)| include_zero || r.available.0 + r.quarantined.0 + r.expired.0 + r.in_transit.0 != 0)
            .collect();
        if include_zero && group.facility && !group.product && !group.lot {
            for (t, row) in tree.iter().enumerate() {
                if !out.iter().any(|(i, _)| *i == t) {
                    out.push((t, StockRow { facility: Some(row.clone()), ..Default::default() }));
                }
            }
        }
        out.sort_by(|(ta, a), (tb, b)| {
            ta.cmp(tb)
                .then_with(|| {
                    a.product.as_ref().map(|p| p.code.clone()).cmp(&b.product.as_ref().map(|p| p.code.clone()))
                })
                .then_with(|| {
                    a.lot.as_ref().map(|l| (l.2, l.1.clone())).cmp(&b.lot.as_ref().map(|l| (l.2, l.1.clone())))
                })
        });
        Ok(out.into_iter().map(|(_, r)| r).collect())
    }

    /// Session wastage per product (and facility) over a period.
    pub async fn wastage(
        &self,
        caller: &Caller,
        facility_id: &str,
        product_id: &str,
        start: NaiveDate,
        end: NaiveDate,
        facility_depth: Option<i32>,
    ) -> Result<Vec<WastageRow>> {
        let root = self.report_root(caller, facility_id).await?;
        let product_id = validate::optional_id("product_id", product_id)?;
        if end < start {
            return Err(Error::invalid("end_date", "must not be before start_date"));
        }
        if (end - start).num_days() > 3 * 366 {
            return Err(Error::invalid("end_date", "the period may span at most 3 years"));
        }
        let products = self.products_by_id(caller).await?;
        let usage = self.store.session_usage(&root.path, product_id.as_deref(), start, end).await?;
        let from = start
            .and_hms_opt(0, 0, 0)
            .map(|d| d.and_utc())
            .ok_or_else(|| Error::invalid("start_date", "out of range"))?;
        let until = end
            .checked_add_days(Days::new(1))
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc())
            .ok_or_else(|| Error::invalid("end_date", "out of range"))?;
        let losses = self.store.store_losses(&root.path, product_id.as_deref(), from, until).await?;
        let tree = match facility_depth {
            Some(d) if !(0..=5).contains(&d) => {
                return Err(Error::invalid("facility_grouping.depth", "must be within 0..5"));
            }
            Some(d) => Some(self.tree(&root, d.max(1)).await?),
            None => None,
        };
        let groups: Vec<Option<TreeRow>> = match tree {
            Some(t) => t.into_iter().map(Some).collect(),
            None => vec![None],
        };
        let mut product_list: Vec<&Product> =
            products.values().filter(|p| product_id.as_ref().is_none_or(|id| *id == p.id)).collect();
        product_list.sort_by(|a, b| a.code.cmp(&b.code));
        let mut out = Vec::new();
        for g in groups {
            let prefix = g.as_ref().map_or(root.path.clone(), |t| t.facility.path.clone());
            for p in &product_list {
                let mine = usage.iter().filter(|u| u.product_id == p.id && u.facility_path.starts_with(&prefix));
                let (mut sessions, mut issued, mut given, mut unopened) = (0, 0, 0, 0);
                for u in mine {
                    sessions += u.sessions;
                    issued += u.doses_issued;
                    given += u.doses_administered;
                    unopened += u.unopened_discard_doses;
                }
                let store: i64 = losses
                    .iter()
                    .filter(|(path, prod, _)| *prod == p.id && path.starts_with(&prefix))
                    .map(|l| l.2)
                    .sum();
                if sessions == 0 && store == 0 {
                    continue;
                }
                out.push(WastageRow {
                    facility: g.clone(),
                    product: (*p).clone(),
                    sessions,
                    doses_issued: issued,
                    doses_administered: given,
                    rate_bp: rp::wastage_rate_bp(issued, given),
                    opened_vial_doses: (issued - given - unopened).max(0),
                    unopened_vial_doses: unopened,
                    store_doses: store,
                });
            }
        }
        Ok(out)
    }

    /// Lots with stock expiring within `within_days`, soonest first.
    pub async fn expiry_risk(
        &self,
        caller: &Caller,
        facility_id: &str,
        product_id: &str,
        within_days: i32,
        include_expired: bool,
    ) -> Result<Vec<ExpiryRow>> {
        let root = self.report_root(caller, facility_id).await?;
        let product_id = validate::optional_id("product_id", product_id)?;
        let within = match within_days {
            0 => 90,
            d if (1..=730).contains(&d) => i64::from(d),
            _ => return Err(Error::invalid("within_days", "must be within 1..730")),
        };
        let products = self.products_by_id(caller).await?;
        let facilities: HashMap<String, Facility> =
            self.store.subtree_facilities(&root.path).await?.into_iter().map(|f| (f.id.clone(), f)).collect();
        let today = Utc::now().date_naive();
        let since = Utc::now() - chrono::Duration::days(90);
        let use_90: HashMap<(String, String), i64> =
            self.store.outflow_since(&root.path, since).await?.into_iter().map(|(f, p, d)| ((f, p), d)).collect();
        let mut grouped: HashMap<(String, String), (StockItem, i64, i64)> = HashMap::new();
        for (item, _) in self.store.subtree_stock(&root.path, product_id.as_deref(), None).await? {
            let days = rp::days_to(today, item.expiry);
            if days > within || (days < 0 && !include_expired) {
                continue;
            }
            let e = grouped.entry((item.facility_id.clone(), item.lot_id.clone())).or_insert((item.clone(), 0, 0));
            e.1 += item.balance.vials;
            e.2 += item.balance.quarantined;
        }
        let mut rows: Vec<ExpiryRow> = grouped
            .into_values()
            .filter_map(|(item, vials, quarantined)| {
                let facility = facilities.get(&item.facility_id)?.clone();
                let product = products.get(&item.product_id)?.clone();
                let days = rp::days_to(today, item.expiry);
                let avg = use_90.get(&(item.facility_id.clone(), item.product_id.clone())).copied().unwrap_or(0).max(0)
                    as f64
                    / 90.0;
                let doses = vials * item.doses_per_vial;
                Some(ExpiryRow {
                    facility,
                    product,
                    lot: (item.lot_id, item.lot_number, item.expiry),
                    days,
                    band: rp::expiry_band(days),
                    on_hand: (vials, doses),
                    quarantined_vials: quarantined,
                    avg_daily_use: avg,
                    doses_at_risk: rp::doses_at_risk(doses, avg, days),
                })
            })
            .collect();
        rows.sort_by(|a, b| {
            a.lot.2.cmp(&b.lot.2).then(a.facility.path.cmp(&b.facility.path)).then(a.lot.1.cmp(&b.lot.1))
        });
        Ok(rows)
    }

    /// The supply-chain events of a subtree in [start, end) as one EPCIS 2.0 JSON-LD document.
    pub async fn export_epcis(
        &self,
        caller: &Caller,
        facility_id: &str,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
    ) -> Result<String> {
        let root = self.report_root(caller, facility_id).await?;
        let start = start.ok_or_else(|| Error::invalid("start_time", "is required"))?;
        let end = end.ok_or_else(|| Error::invalid("end_time", "is required"))?;
        if end <= start {
            return Err(Error::invalid("end_time", "must be after start_time"));
        }
        // The document is built in memory: a bound keeps one request from holding years of events.
        if end - start > chrono::Duration::days(366) {
            return Err(Error::invalid("end_time", "the range must not exceed 366 days; export year by year"));
        }
        let filter = EntryFilter {
            ancestor_path: Some(root.path.clone()),
            start: Some(start),
            end: Some(end),
            ..Default::default()
        };
        let mut entries = Vec::new();
        let mut token = String::new();
        loop {
            let page = PageRequest::parse(1000, &token, &filter)?;
            let got = self.store.list_entries(&caller.scope_path, &filter, &page).await?;
            entries.extend(got.items);
            if got.next_page_token.is_empty() {
                break;
            }
            token = got.next_page_token;
        }
        let mut lookup = epcis::Lookup::default();
        for e in &entries {
            let d = &e.draft;
            if !lookup.lots.contains_key(&d.lot_id)
                && let Some(l) = self.store.get_lot(&d.lot_id).await?
            {
                lookup.lots.insert(l.id.clone(), epcis::LotKey { gtin: l.gtin, lot_number: l.lot_number });
            }
            if let Some(sid) = &d.shipment_id
                && !lookup.shipments.contains_key(sid)
                && let Some(s) = self.store.get_shipment(sid).await?
            {
                lookup.shipments.insert(sid.clone(), (s.from_facility_id, s.to_facility_id));
            }
            if let Some(xid) = &d.exposure_id
                && !lookup.exposures.contains_key(xid)
                && let Some((x, _)) = self.store.get_exposure(xid).await?
            {
                lookup.exposures.insert(xid.clone(), x);
            }
        }
        let mut places: Vec<String> = entries.iter().map(|e| e.draft.facility_id.clone()).collect();
        places.extend(lookup.shipments.values().flat_map(|(a, b)| [a.clone(), b.clone()]));
        for id in places {
            if !lookup.glns.contains_key(&id)
                && let Some(f) = self.store.get_facility(&id).await?
            {
                lookup.glns.insert(id, f.gln);
            }
        }
        let doc = epcis::document(epcis::events(&entries, &lookup), Utc::now());
        serde_json::to_string_pretty(&doc).map_err(|e| Error::Internal(format!("EPCIS document: {e}")))
    }

    /// Pages any report's rows.
    pub fn page_rows<T: Clone>(
        rows: Vec<T>,
        page_size: i32,
        page_token: &str,
        request: &impl std::fmt::Debug,
    ) -> Result<Page<T>> {
        let page = PageRequest::parse(page_size, page_token, request)?;
        page_of(rows, &page)
    }
}

/// CSV of report rows: the header row, then one row each, per the API's export rules.
pub fn csv(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut c = Csv::new(header);
    for r in rows {
        c.row(r);
    }
    c.finish()
}
