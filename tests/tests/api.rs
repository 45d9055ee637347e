//! End-to-end tests of the Foundation API through real gRPC on an ephemeral port, on every engine.
//! Who may call what lives in `authz_matrix.rs`.
#![allow(clippy::unwrap_used)]

use tonic::Code;
use tonic::transport::Channel;
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::admin_service_client::AdminServiceClient;
use vaxtrace_proto::v1::catalog_service_client::CatalogServiceClient;
use vaxtrace_proto::v1::facility_service_client::FacilityServiceClient;
use vaxtrace_tests::{TestDb, TestServer, authed, reason};

struct Clients {
    fac: FacilityServiceClient<Channel>,
    cat: CatalogServiceClient<Channel>,
    adm: AdminServiceClient<Channel>,
}

impl Clients {
    async fn new(s: &TestServer) -> Self {
        let ch = s.channel().await;
        Clients {
            fac: FacilityServiceClient::new(ch.clone()),
            cat: CatalogServiceClient::new(ch.clone()),
            adm: AdminServiceClient::new(ch),
        }
    }
}

fn facility(parent: &str, kind: pb::FacilityKind, code: &str) -> pb::CreateFacilityRequest {
    pb::CreateFacilityRequest {
        facility: Some(pb::Facility {
            parent_id: parent.into(),
            kind: kind as i32,
            code: code.into(),
            name: format!("Facility {code}"),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

async fn create(c: &mut Clients, tok: &str, parent: &str, kind: pb::FacilityKind, code: &str) -> pb::Facility {
    c.fac.create_facility(authed(tok, facility(parent, kind, code))).await.unwrap().into_inner()
}

async fn token(c: &mut Clients, admin: &str, role: pb::Role, scope: &str, device: &str) -> String {
    let r = pb::CreateTokenRequest {
        role: role as i32,
        scope_facility_id: scope.into(),
        description: format!("{role:?}"),
        device_id: device.into(),
        request_id: String::new(),
    };
    c.adm.create_token(authed(admin, r)).await.unwrap().into_inner().secret
}

fn product(code: &str) -> pb::CreateProductRequest {
    pb::CreateProductRequest {
        product: Some(pb::Product {
            code: code.into(),
            name: code.into(),
            vaccine: "MR".into(),
            doses_per_vial: 10,
            presentation: pb::Presentation::Lyophilised as i32,
            vvm_type: pb::VvmType::Vvm14 as i32,
            temperature_profile: pb::TemperatureProfile::Refrigerated as i32,
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

#[tokio::test]
async fn facility_tree_catalogue_and_tokens_end_to_end() {
    for db in TestDb::all() {
        let s = TestServer::start(db).await;
        let mut c = Clients::new(&s).await;
        let a = s.admin_token.clone();
        let n = create(&mut c, &a, "", pb::FacilityKind::NationalStore, "N").await;
        let st = create(&mut c, &a, &n.id, pb::FacilityKind::StateStore, "S").await;
        let d = create(&mut c, &a, &st.id, pb::FacilityKind::DistrictStore, "D").await;
        let ccp = create(&mut c, &a, &d.id, pb::FacilityKind::ColdChainPoint, "C").await;
        assert_eq!(ccp.ancestor_ids, vec![n.id.clone(), st.id.clone(), d.id.clone()]);

        // Subtree query: everything under the state.
        let r = pb::ListFacilitiesRequest { ancestor_id: st.id.clone(), ..Default::default() };
        let under = c.fac.list_facilities(authed(&a, r)).await.unwrap().into_inner();
        let mut codes: Vec<_> = under.facilities.iter().map(|f| f.code.clone()).collect();
        codes.sort();
        assert_eq!(codes, vec!["C", "D"]);

        // A state store cannot hang under a cold-chain point.
        let e =
            c.fac.create_facility(authed(&a, facility(&ccp.id, pb::FacilityKind::StateStore, "X"))).await.unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (Code::FailedPrecondition, "INVALID_PARENT_KIND"));

        // Update with a mask changes only the named field.
        let mut upd = ccp.clone();
        upd.name = "PHC Renamed".into();
        upd.gln = "0614141000005".into();
        let r = pb::UpdateFacilityRequest {
            facility: Some(upd),
            update_mask: vec!["name".into()],
            request_id: String::new(),
        };
        let got = c.fac.update_facility(authed(&a, r)).await.unwrap().into_inner();
        assert_eq!((got.name.as_str(), got.gln.as_str()), ("PHC Renamed", ""));

        // Idempotent create: the same request_id returns the same facility.
        let mut req = facility(&ccp.id, pb::FacilityKind::SessionSite, "SS1");
        req.request_id = "4b1f5c2e-retry".into();
        let one = c.fac.create_facility(authed(&a, req.clone())).await.unwrap().into_inner();
        let two = c.fac.create_facility(authed(&a, req)).await.unwrap().into_inner();
        assert_eq!(one, two);

        // Storage unit, product (WHO default wastage), lot.
        let u = pb::CreateStorageUnitRequest {
            storage_unit: Some(pb::StorageUnit {
                facility_id: ccp.id.clone(),
                kind: pb::StorageUnitKind::Ilr as i32,
                name: "ILR 1".into(),
                temperature_profile: pb::TemperatureProfile::Refrigerated as i32,
                ..Default::default()
            }),
            request_id: String::new(),
        };
        let unit = c.fac.create_storage_unit(authed(&a, u)).await.unwrap().into_inner();
        assert!(unit.active);
        let p = c.cat.create_product(authed(&a, product("MR10"))).await.unwrap().into_inner();
        assert_eq!(p.acceptable_wastage_bp, 5000, "WHO maximum for 10-dose lyophilised");
        let lot = pb::CreateLotRequest {
            lot: Some(pb::Lot {
                product_id: p.id.clone(),
                lot_number: "MR2611".into(),
                manufacturer: "SII".into(),
                expiry: Some(pb::Date { year: 2027, month: 11, day: 30 }),
                ..Default::default()
            }),
            request_id: String::new(),
        };
        let l = c.cat.create_lot(authed(&a, lot)).await.unwrap().into_inner();
        assert_eq!(c.cat.get_lot(authed(&a, pb::GetLotRequest { id: l.id.clone() })).await.unwrap().into_inner(), l);

        // Tokens: a depot manager token works, then is revoked.
        let dm = token(&mut c, &a, pb::Role::DepotManager, &ccp.id, "").await;
        let me = c.adm.who_am_i(authed(&dm, pb::WhoAmIRequest {})).await.unwrap().into_inner();
        assert_eq!((me.role, me.scope_facility_id.as_str()), (pb::Role::DepotManager as i32, ccp.id.as_str()));
        c.adm
            .revoke_token(authed(&a, pb::RevokeTokenRequest { id: me.id.clone(), request_id: String::new() }))
            .await
            .unwrap();
        let e = c.adm.who_am_i(authed(&dm, pb::WhoAmIRequest {})).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let listed = c
            .adm
            .list_tokens(authed(&a, pb::ListTokensRequest { include_revoked: true, ..Default::default() }))
            .await
            .unwrap();
        assert_eq!(listed.into_inner().tokens.len(), 2);
        s.stop().await;
    }
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    for db in TestDb::all() {
        let s = TestServer::start(db).await;
        let mut c = Clients::new(&s).await;
        let a = s.admin_token.clone();
        let n = create(&mut c, &a, "", pb::FacilityKind::NationalStore, "N").await;

        let cases: Vec<(pb::CreateFacilityRequest, Code, &str)> = vec![
            (pb::CreateFacilityRequest::default(), Code::InvalidArgument, "facility.kind"),
            (facility(&n.id, pb::FacilityKind::StateStore, ""), Code::InvalidArgument, "facility.code"),
            (facility("not-an-id", pb::FacilityKind::StateStore, "S"), Code::InvalidArgument, "facility.parent_id"),
            (facility("", pb::FacilityKind::StateStore, "S"), Code::InvalidArgument, "facility.parent_id"),
        ];
        for (req, code, field) in cases {
            let e = c.fac.create_facility(authed(&a, req)).await.unwrap_err();
            assert_eq!(e.code(), code, "{}", e.message());
            assert!(e.message().contains(field), "message names {field}: {}", e.message());
        }
        let unknown = "0190f3e2-7c1a-7abc-8def-0123456789ab";
        let e =
            c.fac.create_facility(authed(&a, facility(unknown, pb::FacilityKind::StateStore, "S"))).await.unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (Code::NotFound, "PARENT_NOT_FOUND"));
        let e =
            c.fac.create_facility(authed(&a, facility("", pb::FacilityKind::NationalStore, "N2"))).await.unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (Code::AlreadyExists, "NATIONAL_STORE_EXISTS"));
        let e = c
            .fac
            .get_facility(authed(&a, pb::GetFacilityRequest { id: "x'; DROP TABLE facilities;--".into() }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = c.fac.get_facility(authed(&a, pb::GetFacilityRequest { id: unknown.into() })).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound);

        // Page sizes: negative refused, huge clamped, foreign tokens refused.
        let e = c
            .fac
            .list_facilities(authed(&a, pb::ListFacilitiesRequest { page_size: -1, ..Default::default() }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let ok = c
            .fac
            .list_facilities(authed(&a, pb::ListFacilitiesRequest { page_size: i32::MAX, ..Default::default() }))
            .await;
        assert_eq!(ok.unwrap().into_inner().facilities.len(), 1);
        let e = c
            .fac
            .list_facilities(authed(
                &a,
                pb::ListFacilitiesRequest { page_token: "garbage".into(), ..Default::default() },
            ))
            .await
            .unwrap_err();
        assert_eq!((e.code(), reason(&e).as_str()), (Code::InvalidArgument, "INVALID_PAGE_TOKEN"));

        // Unauthenticated in every shape.
        let e = c.fac.list_facilities(pb::ListFacilitiesRequest::default()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        for bad in ["garbage", "vxt_", &format!("{}x", a), &a.replace("vxt_", "vxt_0")] {
            let e = c.fac.list_facilities(authed(bad, pb::ListFacilitiesRequest::default())).await.unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "token {bad:?}");
        }
        // Catalogue validation names fields; bad GTIN check digits are refused.
        let mut p = product("BAD");
        if let Some(p) = p.product.as_mut() {
            p.gtins = vec!["09506000000038".into()];
        }
        let e = c.cat.create_product(authed(&a, p)).await.unwrap_err();
        assert!(e.code() == Code::InvalidArgument && e.message().contains("check digit"), "{}", e.message());
        let lot = pb::CreateLotRequest {
            lot: Some(pb::Lot {
                product_id: unknown.into(),
                lot_number: "L".into(),
                expiry: Some(pb::Date { year: 2027, month: 2, day: 30 }),
                ..Default::default()
            }),
            request_id: String::new(),
        };
        let e = c.cat.create_lot(authed(&a, lot)).await.unwrap_err();
        assert!(e.code() == Code::InvalidArgument && e.message().contains("lot.expiry"), "{}", e.message());
        s.stop().await;
    }
}
