//! Whole listings for pages that show everything in scope at once (a district's facilities, a
//! store's units, the catalogue): every page of a paged use case, up to a cap.

use std::collections::HashMap;
use std::future::Future;

use crate::app::App;
use crate::domain::facility::FacilityQuery;
use crate::domain::{Caller, Facility, Page, Product, StorageUnit};
use crate::error::Result;

/// Collects the pages of a listing until the last one or until `cap` items.
pub(crate) async fn collect<T, F, Fut>(cap: usize, mut page: F) -> Result<Vec<T>>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<Page<T>>>,
{
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let p = page(token).await?;
        out.extend(p.items);
        if p.next_page_token.is_empty() || out.len() >= cap {
            return Ok(out);
        }
        token = p.next_page_token;
    }
}

/// The facilities in the caller's scope.
pub(crate) async fn facilities(app: &App, c: &Caller, cap: usize) -> Result<Vec<Facility>> {
    collect(cap, |t| async move { app.list_facilities(c, FacilityQuery::default(), 1000, &t).await }).await
}

/// The active storage units of a facility (empty: of the whole scope).
pub(crate) async fn units(app: &App, c: &Caller, facility_id: &str, cap: usize) -> Result<Vec<StorageUnit>> {
    collect(cap, |t| async move { app.list_storage_units(c, facility_id, "", false, 1000, &t).await }).await
}

/// The catalogue by product id, inactive products included (old stock still names them).
pub(crate) async fn products(app: &App, c: &Caller, cap: usize) -> Result<HashMap<String, Product>> {
    let all = collect(cap, |t| async move { app.list_products(c, true, 1000, &t).await }).await?;
    Ok(all.into_iter().map(|p| (p.id.clone(), p)).collect())
}
