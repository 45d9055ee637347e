//! The storage suite: the same stories against every engine through the `Store` trait.
#![allow(clippy::unwrap_used)]

use vaxtrace_server::domain::catalog::{LotInput, ProductInput};
use vaxtrace_server::domain::facility::{FacilityInput, StorageUnitInput};
use vaxtrace_server::domain::{
    Caller, FacilityFilter, FacilityKind, FacilityPatch, Idempotency, NewFacility, NewLot, NewProduct, NewStorageUnit,
    PageRequest, Role, StorageUnitFilter, new_id,
};
use vaxtrace_server::error::{Error, reason};
use vaxtrace_server::store::{self, Store};
use vaxtrace_tests::TestDb;

fn new_facility(parent: Option<&str>, kind: FacilityKind, code: &str) -> NewFacility {
    NewFacility::parse(FacilityInput {
        parent_id: parent.unwrap_or_default().into(),
        kind: kind.as_i32(),
        code: code.into(),
        name: format!("Facility {code}"),
        ..Default::default()
    })
    .unwrap()
}

async fn add(s: &dyn Store, parent: Option<(&str, &str)>, kind: FacilityKind, code: &str) -> (String, String) {
    let id = new_id();
    let path = match parent {
        Some((_, ppath)) => format!("{ppath}{id}/"),
        None => format!("/{id}/"),
    };
    let f = s.insert_facility(None, &id, &path, &new_facility(parent.map(|p| p.0), kind, code)).await.unwrap();
    assert_eq!(f.path, path);
    (id, path)
}

fn page(size: i32, token: &str, filters: &impl std::fmt::Debug) -> PageRequest {
    PageRequest::parse(size, token, filters).unwrap()
}

#[tokio::test]
async fn facility_tree_subtrees_and_pagination() {
    for db in TestDb::all() {
        let s = store::connect(&db.url().await).await.unwrap();
        let n = add(&*s, None, FacilityKind::NationalStore, "N").await;
        let st = add(&*s, Some((&n.0, &n.1)), FacilityKind::StateStore, "S").await;
        let d1 = add(&*s, Some((&st.0, &st.1)), FacilityKind::DistrictStore, "D1").await;
        let d2 = add(&*s, Some((&st.0, &st.1)), FacilityKind::DistrictStore, "D2").await;
        for i in 0..5 {
            add(&*s, Some((&d1.0, &d1.1)), FacilityKind::ColdChainPoint, &format!("D1-C{i}")).await;
        }
        add(&*s, Some((&d2.0, &d2.1)), FacilityKind::ColdChainPoint, "D2-C0").await;

        // A second national store violates the one-root rule.
        let e = s.insert_facility(None, &new_id(), "/x/", &new_facility(None, FacilityKind::NationalStore, "N2")).await;
        assert!(
            matches!(e, Err(Error::AlreadyExists { reason: reason::NATIONAL_STORE_EXISTS, .. })),
            "{}: {e:?}",
            db.name()
        );
        // Codes are unique.
        let e = s
            .insert_facility(
                None,
                &new_id(),
                &format!("{}zz/", d1.1),
                &new_facility(Some(&d1.0), FacilityKind::ColdChainPoint, "D1-C0"),
            )
            .await;
        assert!(matches!(e, Err(Error::AlreadyExists { reason: reason::DUPLICATE_CODE, .. })), "{}: {e:?}", db.name());

        // Subtree under D1 (strict), as the whole-tree caller: 5 facilities, paged 2 at a time.
        let filter = FacilityFilter { ancestor_path: Some(d1.1.clone()), ..Default::default() };
        let mut token = String::new();
        let mut seen = Vec::new();
        loop {
            let p = s.list_facilities("/", &filter, &page(2, &token, &filter)).await.unwrap();
            assert!(p.items.len() <= 2);
            seen.extend(p.items.into_iter().map(|f| f.code));
            if p.next_page_token.is_empty() {
                break;
            }
            token = p.next_page_token;
        }
        seen.sort();
        assert_eq!(seen, vec!["D1-C0", "D1-C1", "D1-C2", "D1-C3", "D1-C4"], "{}", db.name());

        // A scope is a hard limit: D2's scope sees D2 and its child only, whatever the filter.
        let all = s.list_facilities(&d2.1, &FacilityFilter::default(), &page(100, "", &())).await.unwrap();
        let mut codes: Vec<_> = all.items.iter().map(|f| f.code.as_str()).collect();
        codes.sort_unstable();
        assert_eq!(codes, vec!["D2", "D2-C0"], "{}", db.name());
        let f = FacilityFilter { ancestor_path: Some(d1.1.clone()), ..Default::default() };
        assert!(s.list_facilities(&d2.1, &f, &page(100, "", &f)).await.unwrap().items.is_empty());

        // Name search is case-insensitive and treats wildcards literally.
        let f = FacilityFilter { name_contains: Some("facility d1-c".into()), ..Default::default() };
        assert_eq!(s.list_facilities("/", &f, &page(100, "", &f)).await.unwrap().items.len(), 5, "{}", db.name());
        let f = FacilityFilter { name_contains: Some("%".into()), ..Default::default() };
        assert!(s.list_facilities("/", &f, &page(100, "", &f)).await.unwrap().items.is_empty());

        // Updates and inactive filtering.
        let patch = FacilityPatch { active: Some(false), name: Some("Closed".into()), ..Default::default() };
        let updated = s.update_facility(None, &d2.0, &patch).await.unwrap().unwrap();
        assert!(!updated.active);
        assert_eq!(s.get_facility(&d2.0).await.unwrap().unwrap().name, "Closed");
        let f = FacilityFilter { kind: Some(FacilityKind::DistrictStore), ..Default::default() };
        assert_eq!(s.list_facilities("/", &f, &page(100, "", &f)).await.unwrap().items.len(), 1);
        assert!(s.update_facility(None, &new_id(), &patch).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn storage_units_catalogue_and_idempotency() {
    for db in TestDb::all() {
        let s = store::connect(&db.url().await).await.unwrap();
        let n = add(&*s, None, FacilityKind::NationalStore, "N").await;
        let unit = NewStorageUnit::parse(StorageUnitInput {
            facility_id: n.0.clone(),
            kind: 1,
            name: "ILR 1".into(),
            temperature_profile: 1,
            ..Default::default()
        })
        .unwrap();
        let u = s.insert_storage_unit(None, &new_id(), &unit).await.unwrap();
        let e = s.insert_storage_unit(None, &new_id(), &unit).await;
        assert!(matches!(e, Err(Error::AlreadyExists { reason: reason::DUPLICATE_NAME, .. })), "{}: {e:?}", db.name());
        let (got, path) = s.get_storage_unit(&u.id).await.unwrap().unwrap();
        assert_eq!((got, path), (u.clone(), n.1.clone()));
        let listed = s.list_storage_units(&n.1, &StorageUnitFilter::default(), &page(10, "", &())).await.unwrap();
        assert_eq!(listed.items, vec![u]);

        let caller = Caller {
            token_id: "tok".into(),
            role: Role::Admin,
            scope_path: "/".into(),
            device_id: None,
            answer_key: None,
        };
        let input = ProductInput {
            code: "PENTA10".into(),
            name: "Pentavalent".into(),
            vaccine: "Pentavalent".into(),
            doses_per_vial: 10,
            presentation: 1,
            vvm_type: 4,
            temperature_profile: 1,
            gtins: vec!["09506000000039".into()],
            ..Default::default()
        };
        let p = NewProduct::parse(input.clone()).unwrap();
        assert_eq!(p.acceptable_wastage_bp, 2500, "WHO default for 10-dose liquid");
        let idem = Idempotency::from_request(&caller, "CreateProduct", "req-1", &p).unwrap();
        let first = s.insert_product(idem.as_ref(), &new_id(), &p).await.unwrap();
        // The same request_id returns the first product and creates nothing.
        let again = s.insert_product(idem.as_ref(), &new_id(), &p).await.unwrap();
        assert_eq!(first, again, "{}", db.name());
        assert_eq!(s.list_products(true, &page(10, "", &())).await.unwrap().items.len(), 1);
        // The same request_id with another body is refused.
        let mut other = input.clone();
        other.code = "OTHER".into();
        other.gtins = vec![];
        let other = NewProduct::parse(other).unwrap();
        let idem2 = Idempotency::from_request(&caller, "CreateProduct", "req-1", &other).unwrap();
        let e = s.insert_product(idem2.as_ref(), &new_id(), &other).await;
        assert!(
            matches!(e, Err(Error::InvalidArgument { reason: reason::REQUEST_ID_REUSED, .. })),
            "{}: {e:?}",
            db.name()
        );
        // A GTIN belongs to one product only.
        let mut dup = input.clone();
        dup.code = "PENTA10B".into();
        let e = s.insert_product(None, &new_id(), &NewProduct::parse(dup).unwrap()).await;
        assert!(matches!(e, Err(Error::AlreadyExists { reason: reason::DUPLICATE_GTIN, .. })), "{}: {e:?}", db.name());

        let lot = NewLot::parse(LotInput {
            product_id: first.id.clone(),
            gtin: "09506000000039".into(),
            lot_number: "L001".into(),
            manufacturer: "BE".into(),
            expiry: Some((2027, 6, 30)),
        })
        .unwrap();
        let l = s.insert_lot(None, &new_id(), &lot).await.unwrap();
        assert_eq!(s.get_lot(&l.id).await.unwrap(), Some(l.clone()));
        let e = s.insert_lot(None, &new_id(), &lot).await;
        assert!(matches!(e, Err(Error::AlreadyExists { reason: reason::DUPLICATE_LOT, .. })), "{}: {e:?}", db.name());
        let soon = chrono::NaiveDate::from_ymd_opt(2027, 6, 30);
        let early = chrono::NaiveDate::from_ymd_opt(2027, 6, 29);
        assert_eq!(s.list_lots(Some(&first.id), soon, &page(10, "", &())).await.unwrap().items.len(), 1);
        assert!(s.list_lots(None, early, &page(10, "", &())).await.unwrap().items.is_empty());
    }
}

#[tokio::test]
async fn data_survives_reopening_a_file_database() {
    let dir = tempfile_dir();
    let url = format!("sqlite://{}/t.db", dir.display());
    let id = {
        let s = store::connect(&url).await.unwrap();
        add(&*s, None, FacilityKind::NationalStore, "N").await.0
    };
    let s = store::connect(&url).await.unwrap();
    assert_eq!(s.get_facility(&id).await.unwrap().map(|f| f.code), Some("N".to_owned()));
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vaxtrace-store-{}", new_id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
