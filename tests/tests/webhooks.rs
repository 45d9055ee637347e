//! Webhooks end to end on both engines: a receiver on an ephemeral port records what the server
//! POSTs, and the tests check the proto3 JSON body, the signature, routing by scope, kinds and
//! severity, retries that keep a webhook's events in order, dropping after the retry window,
//! deletion, validation, permissions and idempotent creation.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use tonic::Code;
use tonic::transport::Channel;
use vaxtrace_proto::v1 as pb;
use vaxtrace_proto::v1::admin_service_client::AdminServiceClient;
use vaxtrace_proto::v1::alert_service_client::AlertServiceClient;
use vaxtrace_proto::v1::facility_service_client::FacilityServiceClient;
use vaxtrace_server::app::WebhookSettings;
use vaxtrace_server::domain::alert::{AlertKind, Condition, Details, Severity, Subject};
use vaxtrace_server::domain::webhook::RetryPolicy;
use vaxtrace_tests::world::{World, receive, world};
use vaxtrace_tests::{TestDb, TestServer, authed, reason};

/// One request the receiver got, with the status it answered.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    event_id: String,
    timestamp: String,
    signature: String,
    content_type: String,
    body: Vec<u8>,
    status: u16,
}

impl Received {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// Records every request; a path answers the statuses queued for it, then 200 (or 500 while down).
#[derive(Debug, Default)]
struct Receiver {
    log: Mutex<Vec<Received>>,
    script: Mutex<HashMap<String, VecDeque<u16>>>,
    down: Mutex<HashSet<String>>,
    /// Paths that answer only after this long, so deliveries stay in flight.
    slow: Mutex<HashMap<String, Duration>>,
}

impl Receiver {
    fn answer(&self, path: &str, headers: &axum::http::HeaderMap, body: &[u8]) -> u16 {
        let status = if self.down.lock().unwrap().contains(path) {
            500
        } else {
            self.script.lock().unwrap().get_mut(path).and_then(VecDeque::pop_front).unwrap_or(200)
        };
        let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        self.log.lock().unwrap().push(Received {
            path: path.to_owned(),
            event_id: h("x-vaxtrace-event-id"),
            timestamp: h("x-vaxtrace-timestamp"),
            signature: h("x-vaxtrace-signature"),
            content_type: h("content-type"),
            body: body.to_vec(),
            status,
        });
        status
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.log.lock().unwrap().iter().filter(|r| r.path == path).cloned().collect()
    }

    /// (event id, status) of every request to `path`, in arrival order.
    fn sequence(&self, path: &str) -> Vec<(String, u16)> {
        self.at(path).into_iter().map(|r| (r.event_id, r.status)).collect()
    }

    fn delivered(&self, path: &str) -> Vec<String> {
        self.at(path).into_iter().filter(|r| r.status == 200).map(|r| r.event_id).collect()
    }
}

async fn start_receiver() -> (SocketAddr, Arc<Receiver>) {
    let rec = Arc::new(Receiver::default());
    let r = rec.clone();
    let router = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let r = r.clone();
            async move {
                let status = r.answer(uri.path(), &headers, &body);
                let delay = r.slow.lock().unwrap().get(uri.path()).copied();
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, rec)
}

/// Polls `check` until it holds; fails after 30 s.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A counter from the server's /metrics text.
fn metric(srv: &TestServer, name: &str) -> u64 {
    let text = srv.app.metrics().render();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

fn verify_signature(secret: &str, r: &Received) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(r.timestamp.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    r.signature == format!("sha256={expected}")
}

fn fast_settings() -> WebhookSettings {
    WebhookSettings {
        allow_http: true,
        retry: RetryPolicy {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(2),
            give_up_after: Duration::from_secs(24 * 3600),
        },
        poll: Duration::from_millis(100),
        timeout: Duration::from_secs(5),
        lease: Duration::from_secs(30),
    }
}

fn hook(
    scope: &str,
    url: String,
    kinds: &[pb::AlertKind],
    min: pb::AlertSeverity,
    secret: &str,
) -> pb::CreateWebhookRequest {
    pb::CreateWebhookRequest {
        webhook: Some(pb::Webhook {
            scope_facility_id: scope.into(),
            url,
            kinds: kinds.iter().map(|k| *k as i32).collect(),
            min_severity: min as i32,
            description: "test receiver".into(),
            ..Default::default()
        }),
        secret: secret.into(),
        request_id: String::new(),
    }
}

async fn token(ch: &Channel, admin: &str, role: pb::Role, scope: &str) -> String {
    let req = pb::CreateTokenRequest {
        role: role as i32,
        scope_facility_id: scope.into(),
        description: format!("{role:?}"),
        ..Default::default()
    };
    AdminServiceClient::new(ch.clone()).create_token(authed(admin, req)).await.unwrap().into_inner().secret
}

/// A second district beside the world's district D.
async fn second_district(ch: &Channel, w: &World) -> String {
    let mut fac = FacilityServiceClient::new(ch.clone());
    let d = fac.get_facility(authed(&w.tok, pb::GetFacilityRequest { id: w.d.clone() })).await.unwrap().into_inner();
    let f = pb::Facility {
        parent_id: d.parent_id,
        kind: pb::FacilityKind::DistrictStore as i32,
        code: "D2".into(),
        name: "D2".into(),
        ..Default::default()
    };
    let req = pb::CreateFacilityRequest { facility: Some(f), request_id: String::new() };
    fac.create_facility(authed(&w.tok, req)).await.unwrap().into_inner().id
}

async fn set_policy(w: &mut World, facility: &str) {
    let policy = pb::StockPolicy {
        facility_id: facility.into(),
        product_id: w.product.clone(),
        min_doses: 1000,
        max_doses: 5000,
        ..Default::default()
    };
    let req = pb::SetStockPolicyRequest { policy: Some(policy), request_id: String::new() };
    w.stock.set_stock_policy(authed(&w.tok, req)).await.unwrap();
}

async fn next_event(s: &mut tonic::Streaming<pb::AlertEvent>) -> pb::AlertEvent {
    tokio::time::timeout(Duration::from_secs(20), s.message()).await.expect("an event within 20 s").unwrap().unwrap()
}

fn field(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    status.get_error_details().error_info().and_then(|i| i.metadata.get("field").cloned()).unwrap_or_default()
}

fn rfc3339(t: &prost_types::Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap()).unwrap()
}

#[tokio::test]
async fn deliveries_are_signed_routed_retried_in_order_and_stop_on_delete() {
    for db in TestDb::all() {
        let srv = TestServer::start_with_webhooks(db, fast_settings()).await;
        let name = srv.db.name();
        let ch = srv.channel().await;
        let mut w = world(&srv).await;
        let tok = w.tok.clone();
        let d2 = second_district(&ch, &w).await;
        let dio = token(&ch, &tok, pb::Role::DistrictOfficer, &w.d).await;
        let mut alerts = AlertServiceClient::new(ch.clone());
        let (addr, rec) = start_receiver().await;
        let url = |p: &str| format!("http://{addr}/{p}");
        let any = pb::AlertSeverity::Unspecified;

        let all_secret = "all-secret-0123456789-0123456789-0123456789";
        let all = alerts.create_webhook(authed(&tok, hook("", url("all"), &[], any, all_secret))).await.unwrap();
        let all = all.into_inner();
        assert_eq!(all.secret, all_secret, "{name}: the given secret is shown once");
        assert_eq!(all.webhook.as_ref().unwrap().scope_facility_id, "", "{name}: whole tree");
        // A district officer's webhook without a scope covers the officer's district.
        let in_d = alerts.create_webhook(authed(&dio, hook("", url("d"), &[], any, ""))).await.unwrap().into_inner();
        assert_eq!(in_d.webhook.as_ref().unwrap().scope_facility_id, w.d, "{name}");
        assert_eq!(in_d.secret.len(), 43, "{name}: 32 random bytes, base64url");
        let mk = |scope: &str, path: &str, kinds: &[pb::AlertKind], min: pb::AlertSeverity| {
            hook(scope, url(path), kinds, min, "a-shared-secret-of-at-least-32-chars")
        };
        let mut create = async |req| alerts.create_webhook(authed(&tok, req)).await.unwrap().into_inner();
        let elsewhere = create(mk(&d2, "d2", &[], any)).await;
        let below_only = create(mk("", "kind", &[pb::AlertKind::BelowMinimum], any)).await;
        create(mk("", "sev", &[], pb::AlertSeverity::Critical)).await;
        rec.script.lock().unwrap().insert("/retry".into(), VecDeque::from([500, 500]));
        let retry = create(mk("", "retry", &[], any)).await;
        let retry_secret = retry.secret.clone();

        // Watch to learn the event ids the webhooks must carry.
        let latest = alerts.list_alerts(authed(&tok, pb::ListAlertsRequest::default())).await.unwrap();
        let watch =
            pb::WatchAlertsRequest { after_event_id: latest.into_inner().latest_event_id, ..Default::default() };
        let mut stream = alerts.watch_alerts(authed(&tok, watch)).await.unwrap().into_inner();

        // Stock at the national store: STOCK_OUT, then 500 doses: BELOW_MINIMUM opens and
        // STOCK_OUT clears. Then a critical HEAT alarm at the cold-chain point in district D.
        let (n, nu1) = (w.n.clone(), w.nu1.clone());
        set_policy(&mut w, &n).await;
        srv.app.evaluate_stock_alerts(7).await.unwrap();
        receive(&mut w, &nu1, 0, 50, "").await.unwrap();
        srv.app.evaluate_stock_alerts(7).await.unwrap();
        let heat = Condition {
            kind: AlertKind::Heat,
            subject: Subject { facility_id: w.c.clone(), storage_unit_id: w.cu.clone(), ..Default::default() },
            severity: Severity::Critical,
            start: chrono::Utc::now(),
            through: chrono::Utc::now(),
            details: Details { max_temp_c: Some(12.5), summary: "CU: 12.5 °C".into(), ..Default::default() },
        };
        srv.app.raise_alert(&heat).await.unwrap();
        let e1 = next_event(&mut stream).await;
        let (e2, e3) = (next_event(&mut stream).await, next_event(&mut stream).await);
        let e4 = next_event(&mut stream).await;
        let kind = |e: &pb::AlertEvent| e.alert.as_ref().unwrap().kind;
        assert_eq!(kind(&e1), pb::AlertKind::StockOut as i32, "{name}");
        assert_eq!((kind(&e2), e2.r#type), (pb::AlertKind::BelowMinimum as i32, pb::AlertEventType::Opened as i32));
        assert_eq!(
            (kind(&e3), e3.r#type),
            (pb::AlertKind::StockOut as i32, pb::AlertEventType::ConditionCleared as i32)
        );
        assert_eq!(kind(&e4), pb::AlertKind::Heat as i32, "{name}");
        let ids: Vec<String> = [&e1, &e2, &e3, &e4].iter().map(|e| e.event_id.to_string()).collect();

        until("every expected delivery", || {
            rec.delivered("/all").len() == 4
                && rec.delivered("/d").len() == 1
                && rec.delivered("/kind").len() == 1
                && rec.delivered("/sev").len() == 1
                && rec.delivered("/retry").len() == 4
        })
        .await;
        assert_eq!(rec.delivered("/all"), ids, "{name}: in event order");
        assert_eq!(rec.delivered("/d"), vec![ids[3].clone()], "{name}: only what happened in district D");
        assert_eq!(rec.delivered("/kind"), vec![ids[1].clone()], "{name}: only BELOW_MINIMUM");
        assert_eq!(rec.delivered("/sev"), vec![ids[3].clone()], "{name}: only the critical one");
        assert!(rec.at("/d2").is_empty(), "{name}: another district's webhook gets nothing");
        // The failing first event held the later ones back until it got through.
        let expected: Vec<(String, u16)> = vec![
            (ids[0].clone(), 500),
            (ids[0].clone(), 500),
            (ids[0].clone(), 200),
            (ids[1].clone(), 200),
            (ids[2].clone(), 200),
            (ids[3].clone(), 200),
        ];
        assert_eq!(rec.sequence("/retry"), expected, "{name}");

        // The body is the proto3 JSON AlertEvent, signed with the webhook's secret.
        let first = &rec.at("/all")[0];
        assert_eq!(first.content_type, "application/json");
        assert!(verify_signature(all_secret, first), "{name}: signature verifies");
        assert!(!verify_signature(&retry_secret, first), "{name}: and only with its own secret");
        let sent: i64 = first.timestamp.parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - sent).abs() < 300, "{name}: a current Unix timestamp");
        assert!(rec.at("/retry").iter().all(|r| verify_signature(&retry_secret, r)), "{name}");
        assert!(rec.at("/d").iter().all(|r| verify_signature(&in_d.secret, r)), "{name}: generated secret");
        let j = first.json();
        let a1 = e1.alert.as_ref().unwrap();
        assert_eq!(j["eventId"], ids[0], "{name}: uint64 as a string");
        assert_eq!(j["type"], "ALERT_EVENT_TYPE_OPENED");
        let time = chrono::DateTime::parse_from_rfc3339(j["time"].as_str().unwrap()).unwrap();
        assert_eq!(time, rfc3339(e1.time.as_ref().unwrap()), "{name}");
        let ja = &j["alert"];
        assert_eq!(ja["id"], a1.id.as_str());
        assert_eq!(ja["kind"], "ALERT_KIND_STOCK_OUT");
        assert_eq!(ja["severity"], "ALERT_SEVERITY_ALARM");
        assert_eq!(ja["state"], "ALERT_STATE_OPEN");
        assert_eq!(ja["conditionActive"], true);
        assert_eq!(ja["subject"]["facilityId"], w.n.as_str());
        assert_eq!(ja["subject"]["productId"], w.product.as_str());
        assert_eq!(ja["details"]["stockDoses"], "0", "{name}: int64 as a string, present when set");
        assert_eq!(ja["details"]["maxDoses"], "5000");
        assert_eq!(ja["details"]["quantityToMaxDoses"], "5000");
        let open = chrono::DateTime::parse_from_rfc3339(ja["openTime"].as_str().unwrap()).unwrap();
        assert_eq!(open, rfc3339(a1.open_time.as_ref().unwrap()), "{name}");
        let cleared = rec.at("/all")[2].json();
        assert_eq!(cleared["type"], "ALERT_EVENT_TYPE_CONDITION_CLEARED");
        assert!(cleared["alert"].get("conditionActive").is_none(), "{name}: false is the default, left out");
        assert!(cleared["alert"]["endTime"].is_string(), "{name}");
        let hot = rec.at("/d")[0].json();
        assert_eq!(hot["alert"]["severity"], "ALERT_SEVERITY_CRITICAL");
        assert_eq!(hot["alert"]["subject"]["storageUnitId"], w.cu.as_str());
        assert_eq!(hot["alert"]["details"]["maxTempC"], 12.5, "{name}: a double stays a number");

        // Counters and the webhook's own record of its deliveries.
        until("the last outcome recorded", || metric(&srv, "vaxtrace_webhook_deliveries_total") == 11).await;
        assert_eq!(metric(&srv, "vaxtrace_webhook_failed_attempts_total"), 2, "{name}");
        assert_eq!(metric(&srv, "vaxtrace_webhook_dropped_total"), 0, "{name}");
        let mut listed = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = pb::ListWebhooksRequest { page_size: 2, page_token };
            let page = alerts.list_webhooks(authed(&tok, req)).await.unwrap().into_inner();
            assert!(page.webhooks.len() <= 2);
            listed.extend(page.webhooks);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let listed_ids: Vec<&str> = listed.iter().map(|h| h.id.as_str()).collect();
        let mut sorted = listed_ids.clone();
        sorted.sort_unstable();
        assert_eq!(listed_ids, sorted, "{name}: ordered by id");
        assert_eq!(listed.len(), 6, "{name}");
        let r = listed.iter().find(|h| h.id == retry.webhook.as_ref().unwrap().id).unwrap();
        assert_eq!((r.consecutive_failures, r.last_error.as_str()), (0, "HTTP 500"), "{name}");
        assert!(r.last_failure_time.is_some() && r.last_success_time.is_some(), "{name}");
        let e = listed.iter().find(|h| h.id == elsewhere.webhook.as_ref().unwrap().id).unwrap();
        assert!(e.last_success_time.is_none() && e.last_failure_time.is_none(), "{name}");
        // The district officer sees only the webhooks of its district.
        let mine = alerts.list_webhooks(authed(&dio, pb::ListWebhooksRequest::default())).await.unwrap();
        let mine: Vec<String> = mine.into_inner().webhooks.into_iter().map(|h| h.id).collect();
        assert_eq!(mine, vec![in_d.webhook.as_ref().unwrap().id.clone()], "{name}");

        // Deleting stops deliveries: the next event reaches the others but not the deleted one.
        let all_id = all.webhook.as_ref().unwrap().id.clone();
        let del = |id: &str, rid: &str| pb::DeleteWebhookRequest { id: id.into(), request_id: rid.into() };
        alerts.delete_webhook(authed(&tok, del(&all_id, "del-all"))).await.unwrap();
        alerts.delete_webhook(authed(&tok, del(&all_id, "del-all"))).await.expect("a replayed delete succeeds");
        let again = alerts.delete_webhook(authed(&tok, del(&all_id, ""))).await.unwrap_err();
        assert_eq!((again.code(), reason(&again).as_str()), (Code::NotFound, "WEBHOOK_NOT_FOUND"), "{name}");
        let whole_tree = alerts.delete_webhook(authed(&dio, del(&below_only.webhook.unwrap().id, ""))).await;
        assert_eq!(whole_tree.unwrap_err().code(), Code::PermissionDenied, "{name}: outside the officer's scope");
        receive(&mut w, &nu1, 0, 100, "").await.unwrap(); // 1500 doses: BELOW_MINIMUM clears
        srv.app.evaluate_stock_alerts(7).await.unwrap();
        let e5 = next_event(&mut stream).await.event_id.to_string();
        until("the event after the delete", || {
            rec.delivered("/retry").contains(&e5) && rec.delivered("/kind").contains(&e5)
        })
        .await;
        assert_eq!(rec.at("/all").len(), 4, "{name}: nothing more for a deleted webhook");
        let left = alerts.list_webhooks(authed(&tok, pb::ListWebhooksRequest::default())).await.unwrap();
        assert!(left.into_inner().webhooks.iter().all(|h| h.id != all_id), "{name}");
        srv.stop().await;
    }
}

#[tokio::test]
async fn a_delivery_failing_past_the_retry_window_is_dropped_and_the_next_goes_out() {
    for db in TestDb::all() {
        let mut settings = fast_settings();
        settings.retry = RetryPolicy {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(50),
            give_up_after: Duration::from_millis(400),
        };
        let srv = TestServer::start_with_webhooks(db, settings).await;
        let name = srv.db.name();
        let w = world(&srv).await;
        let mut alerts = AlertServiceClient::new(srv.channel().await);
        let (addr, rec) = start_receiver().await;
        rec.down.lock().unwrap().insert("/dead".into());
        let req = hook("", format!("http://{addr}/dead"), &[], pb::AlertSeverity::Unspecified, "");
        let created = alerts.create_webhook(authed(&w.tok, req)).await.unwrap().into_inner();

        let stock_out = |product: &str| Condition {
            kind: AlertKind::StockOut,
            subject: Subject { facility_id: w.c.clone(), product_id: product.into(), ..Default::default() },
            severity: Severity::Alarm,
            start: chrono::Utc::now(),
            through: chrono::Utc::now(),
            details: Details { summary: product.into(), ..Default::default() },
        };
        let first = srv.app.raise_alert_event(&stock_out("p1")).await.unwrap().unwrap().event_id.to_string();
        until("the first event dropped", || metric(&srv, "vaxtrace_webhook_dropped_total") == 1).await;
        let failures = rec.at("/dead").len();
        assert!(failures >= 2, "{name}: retried before dropping ({failures} attempts)");
        let listed = alerts.list_webhooks(authed(&w.tok, pb::ListWebhooksRequest::default())).await.unwrap();
        let h =
            listed.into_inner().webhooks.into_iter().find(|h| Some(&h.id) == created.webhook.as_ref().map(|w| &w.id));
        let h = h.unwrap();
        assert_eq!((h.last_error.as_str(), h.consecutive_failures as usize), ("HTTP 500", failures), "{name}");

        rec.down.lock().unwrap().clear();
        let second = srv.app.raise_alert_event(&stock_out("p2")).await.unwrap().unwrap().event_id.to_string();
        until("the next event delivered", || rec.delivered("/dead") == vec![second.clone()]).await;
        let seq = rec.sequence("/dead");
        assert!(seq[..failures].iter().all(|(id, s)| *id == first && *s == 500), "{name}: {seq:?}");
        assert_eq!(seq[failures..], [(second.clone(), 200)], "{name}: the dropped event is not sent again");
        srv.stop().await;
    }
}

#[tokio::test]
async fn creation_is_validated_authorized_and_idempotent() {
    for db in TestDb::all() {
        // No allow-http knob here: webhooks must be https.
        let srv = TestServer::start(db).await;
        let name = srv.db.name();
        let ch = srv.channel().await;
        let w = world(&srv).await;
        let tok = w.tok.clone();
        let mut alerts = AlertServiceClient::new(ch.clone());
        let any = pb::AlertSeverity::Unspecified;
        let https = "https://hooks.example.invalid/vaxtrace".to_owned();

        let e = alerts.create_webhook(authed(&tok, hook("", "http://127.0.0.1:9/x".into(), &[], any, ""))).await;
        let e = e.unwrap_err();
        assert_eq!(
            (e.code(), reason(&e).as_str(), field(&e).as_str()),
            (Code::InvalidArgument, "INVALID_FIELD", "webhook.url")
        );
        let long = format!("https://hooks.example.invalid/{}", "x".repeat(2000));
        let e = alerts.create_webhook(authed(&tok, hook("", long, &[], any, ""))).await.unwrap_err();
        assert_eq!(field(&e), "webhook.url", "{name}: at most 2000 characters");
        let e = alerts.create_webhook(authed(&tok, hook("", https.clone(), &[], any, "too-short"))).await.unwrap_err();
        assert_eq!(
            (e.code(), reason(&e).as_str(), field(&e).as_str()),
            (Code::InvalidArgument, "INVALID_FIELD", "secret")
        );
        let e =
            alerts.create_webhook(authed(&tok, hook("", https.clone(), &[pb::AlertKind::Unspecified], any, ""))).await;
        assert_eq!(field(&e.unwrap_err()), "webhook.kinds", "{name}");

        // Roles and scope: a depot manager may not; a district officer only inside its district.
        let dm = token(&ch, &tok, pb::Role::DepotManager, &w.d).await;
        let dio = token(&ch, &tok, pb::Role::DistrictOfficer, &w.d).await;
        let e = alerts.create_webhook(authed(&dm, hook("", https.clone(), &[], any, ""))).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{name}");
        let e = alerts.list_webhooks(authed(&dm, pb::ListWebhooksRequest::default())).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{name}");
        let e = alerts.create_webhook(authed(&dio, hook(&w.n, https.clone(), &[], any, ""))).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{name}: the national store is outside the district");
        let below = alerts.create_webhook(authed(&dio, hook(&w.c, https.clone(), &[], any, ""))).await.unwrap();
        assert_eq!(below.into_inner().webhook.unwrap().scope_facility_id, w.c, "{name}: a facility below is fine");

        // A repeated request_id returns the first webhook and its secret; nothing is created twice.
        let mut req = hook("", https.clone(), &[pb::AlertKind::Heat], pb::AlertSeverity::Alarm, "");
        req.request_id = "create-1".into();
        let a = alerts.create_webhook(authed(&tok, req.clone())).await.unwrap().into_inner();
        let b = alerts.create_webhook(authed(&tok, req.clone())).await.unwrap().into_inner();
        assert_eq!(a.webhook, b.webhook, "{name}");
        assert_eq!((a.secret.len(), &a.secret), (43, &b.secret), "{name}");
        let hooks = alerts.list_webhooks(authed(&tok, pb::ListWebhooksRequest::default())).await.unwrap().into_inner();
        assert_eq!(hooks.webhooks.len(), 2, "{name}: the officer's and one idempotent one");
        let created = a.webhook.unwrap();
        assert_eq!(
            (created.kinds, created.min_severity),
            (vec![pb::AlertKind::Heat as i32], pb::AlertSeverity::Alarm as i32)
        );
        req.webhook.as_mut().unwrap().url = "https://other.example.invalid/".into();
        let e = alerts.create_webhook(authed(&tok, req)).await.unwrap_err();
        assert_eq!(reason(&e), "REQUEST_ID_REUSED", "{name}");
        srv.stop().await;
    }
}

#[tokio::test]
async fn two_replicas_on_one_postgres_send_each_delivery_once() {
    let Some(db) = TestDb::all().into_iter().find(|d| matches!(d, TestDb::Postgres(_))) else { return };
    let srv = TestServer::start_with_webhooks(db, fast_settings()).await;
    let second = vaxtrace_server::open(&srv.database_url).await.unwrap().with_webhook_settings(fast_settings());
    second.spawn_webhooks();
    let w = world(&srv).await;
    let mut alerts = AlertServiceClient::new(srv.channel().await);
    let (addr, rec) = start_receiver().await;
    // Failures make both replicas see the same deliveries come due again and again, and a slow
    // receiver keeps each one in flight across the other replica's polls.
    rec.script.lock().unwrap().insert("/r".into(), VecDeque::from([500, 503, 500]));
    rec.slow.lock().unwrap().insert("/r".into(), Duration::from_millis(150));
    let req = hook("", format!("http://{addr}/r"), &[], pb::AlertSeverity::Unspecified, "");
    alerts.create_webhook(authed(&w.tok, req)).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..8 {
        let c = Condition {
            kind: AlertKind::StockOut,
            subject: Subject { facility_id: w.d.clone(), product_id: format!("p{i}"), ..Default::default() },
            severity: Severity::Alarm,
            start: chrono::Utc::now(),
            through: chrono::Utc::now(),
            details: Details::default(),
        };
        // Half the events are written through the second replica.
        let app = if i % 2 == 0 { &srv.app } else { &second };
        ids.push(app.raise_alert_event(&c).await.unwrap().unwrap().event_id.to_string());
    }
    until("every event delivered", || rec.delivered("/r").len() >= ids.len()).await;
    let delivered = |a: &vaxtrace_server::App| {
        let text = a.metrics().render();
        let v = text.lines().find_map(|l| l.strip_prefix("vaxtrace_webhook_deliveries_total "));
        v.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    until("both replicas done", || delivered(&srv.app) + delivered(&second) >= 8).await;
    assert_eq!(rec.delivered("/r"), ids, "once each, in event order");
    assert_eq!(delivered(&srv.app) + delivered(&second), 8);
    second.close_streams();
    srv.stop().await;
}
