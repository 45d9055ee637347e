//! The district dashboard, on both engines: sign-in and sessions, scope, anti-forgery, page
//! sizes over plain HTTP; and a district officer's morning in real headless Chromium — sign in,
//! watch a breach appear live, acknowledge it, open the facility chart, assess the exposed lot,
//! download a CSV.
#![allow(clippy::unwrap_used)]

use chrono::{Duration, Utc};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vaxtrace_proto::v1 as pb;
use vaxtrace_tests::browser::Browser;
use vaxtrace_tests::web::Web;
use vaxtrace_tests::world::{receive, register_logger, send_readings, ship, token, world};
use vaxtrace_tests::{TestDb, TestServer};

#[tokio::test]
async fn sessions_scope_and_forgery() {
    for db in TestDb::all() {
        let srv = TestServer::start(db).await;
        let name = srv.db.name();
        let w = world(&srv).await;
        let dio = token(&srv, &w.tok, pb::Role::DistrictOfficer, &w.d).await;

        // Signed out: pages send people to sign in, scripts get 401.
        let mut web = Web::new(srv.addr);
        let p = web.get("/dash").await;
        assert_eq!((p.status, p.header("location")), (303, "/signin?next=/dash"), "{name}");
        let p = web.get("/signin").await;
        assert_eq!(p.status, 200, "{name}");
        assert!(p.header("content-security-policy").contains("default-src 'self'"), "{name}");

        // A wrong token is refused with a message; a logger token cannot sign in.
        let p = web.sign_in("vxt_00000000000000000000000000000000_nope").await;
        assert_eq!(p.status, 401, "{name}");
        assert!(p.body.contains("not valid"), "{name}");
        assert!(web.cookie.is_empty(), "{name}");
        let (dev, _) = register_logger(&srv, &w.tok, &w.d, &w.du, 60).await;
        let dev_token = token_for_device(&srv, &w.tok, &dev, &w.d).await;
        let p = web.sign_in(&dev_token).await;
        assert_eq!(p.status, 401, "{name}");
        assert!(p.body.contains("Logger tokens"), "{name}");

        // The district officer signs in: an HttpOnly, SameSite=Strict cookie, then the overview.
        let p = web.sign_in(&dio).await;
        assert_eq!((p.status, p.header("location")), (303, "/"), "{name}");
        let cookie = p.header("set-cookie");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{name}: {cookie}");
        assert!(!cookie.contains(&dio), "{name}: the token itself never goes into the cookie");
        assert_eq!(web.get("/").await.header("location"), "/dash", "{name}");
        let p = web.get("/dash").await;
        assert_eq!(p.status, 200, "{name}");
        assert!(p.body.contains(">D<") && p.body.contains(">C<"), "{name}: the district's facilities");
        assert!(!p.body.contains(">N<") && !p.body.contains(">ST<"), "{name}: nothing above the district");
        assert!(p.body.len() < 200_000, "{name}: {} bytes", p.body.len());
        // Outside the scope: refused.
        let p = web.get(&format!("/dash/facilities/{}", w.n)).await;
        assert_eq!(p.status, 403, "{name}");

        // A form without this session's anti-forgery value is refused and changes nothing.
        let (dev2, key2) = register_logger(&srv, &w.tok, &w.d, &w.du, 600).await;
        let t0 = Utc::now() - Duration::hours(12);
        let hot: Vec<_> = (0..62).map(|i| (i as u64 + 1, t0 + Duration::minutes(10 * i), 9.0)).collect();
        send_readings(&srv, &dev2, &key2, &hot).await;
        let p = web.get("/dash/alerts").await;
        let id =
            p.body.split_once("id=\"alert-").and_then(|(_, r)| r.split_once('"')).map(|(id, _)| id.to_owned()).unwrap();
        let csrf = p.field("csrf");
        let p = web
            .post(
                &format!("/dash/alerts/{id}/acknowledge"),
                &[("csrf", "forged"), ("request_id", "r1"), ("comment", "x")],
            )
            .await;
        assert_eq!(p.status, 403, "{name}");
        assert!(web.get("/dash/alerts").await.body.contains("data-state=\"1\""), "{name}: still open");
        // With it, the acknowledgement goes through; the same request_id again changes nothing.
        let ack =
            [("csrf", csrf.as_str()), ("request_id", "r2"), ("comment", "technician called"), ("back", "/dash/alerts")];
        let p = web.post(&format!("/dash/alerts/{id}/acknowledge"), &ack).await;
        assert_eq!(p.status, 303, "{name}: {}", p.body);
        let p = web.post(&format!("/dash/alerts/{id}/acknowledge"), &ack).await;
        assert_eq!(p.status, 303, "{name}: a resubmitted form is answered, not refused: {}", p.body);
        let list = web.get("/dash/alerts").await;
        assert!(list.body.contains("technician called") && list.body.contains("data-state=\"2\""), "{name}");
        assert_eq!(list.body.matches("technician called").count(), 1, "{name}");

        // Nothing from the address is echoed into the page or used as a message.
        let p = web.get("/dash/alerts?state=%22%3E%3Cb%3Einjected&done=Call%20this%20number").await;
        assert_eq!(p.status, 200, "{name}");
        assert!(!p.body.contains("<b>injected") && !p.body.contains("Call this number"), "{name}");
        // A refused acknowledgement shows the reason and keeps the comment as typed.
        let p = web
            .post(
                "/dash/alerts/not-an-alert/acknowledge",
                &[("csrf", &csrf), ("request_id", "r3"), ("comment", "kept <text>")],
            )
            .await;
        assert!(p.status >= 400 && p.body.contains("notice error"), "{name}: {}", p.status);

        // Sign-in cannot be forged from another site, and never redirects off the site.
        let other = Web::new(srv.addr);
        let p = other.post_with("/signin", &[("token", dio.as_str())], &[("sec-fetch-site", "cross-site")]).await;
        assert_eq!(p.status, 403, "{name}");
        let p = other.post("/signin", &[("token", dio.as_str()), ("next", "/\t/evil.example/")]).await;
        assert_eq!((p.status, p.header("location")), (303, "/"), "{name}");

        // An open live stream ends when its session does: the next event is not delivered.
        let mut live = Web::new(srv.addr);
        live.sign_in(&dio).await;
        let live_csrf = live.get("/dash/alerts").await.field("csrf");
        let mut stream = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        let head = format!("GET /dash/alerts/stream HTTP/1.1\r\nhost: x\r\ncookie: {}\r\n\r\n", live.cookie);
        stream.write_all(head.as_bytes()).await.unwrap();
        assert_eq!(live.post("/signout", &[("csrf", live_csrf.as_str())]).await.status, 303, "{name}");
        let cold: Vec<_> = (62..64).map(|i| (i as u64 + 1, t0 + Duration::minutes(10 * i), -3.0)).collect();
        send_readings(&srv, &dev2, &key2, &cold).await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&got).contains("\r\n0\r\n\r\n") {
                    break;
                }
            }
        })
        .await;
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 200"), "{name}: {got}");
        assert!(!got.contains("event: alert"), "{name}: an event reached a signed-out stream: {got}");

        // CSV downloads are scoped like the pages.
        let p = web.get("/dash/reports/stock.csv").await;
        assert_eq!(p.status, 200, "{name}");
        assert!(p.header("content-disposition").contains("stock_on_hand_"), "{name}");
        assert!(p.body.starts_with("facility_id,"), "{name}");
        assert!(!p.body.contains(&w.n), "{name}: the national store is outside the district");

        // Signing out ends the session on the server: the old cookie no longer works.
        let old = web.clone();
        let p = web.post("/signout", &[("csrf", &csrf)]).await;
        assert_eq!((p.status, p.header("location")), (303, "/signin"), "{name}");
        assert_eq!(old.get("/dash").await.status, 303, "{name}");

        // Revoking the token ends its sessions too.
        let mut again = Web::new(srv.addr);
        again.sign_in(&dio).await;
        assert_eq!(again.get("/dash").await.status, 200, "{name}");
        let dio_id = dio.split('_').nth(1).unwrap();
        let admin = srv.app.authenticate(&w.tok).await.unwrap();
        srv.app.revoke_token(&admin, "", dio_id).await.unwrap();
        assert_eq!(again.get("/dash").await.status, 303, "{name}");
        srv.stop().await;
    }
}

async fn token_for_device(srv: &TestServer, admin: &str, device: &str, scope: &str) -> String {
    let mut t = pb::admin_service_client::AdminServiceClient::new(srv.channel().await);
    let r = pb::CreateTokenRequest {
        role: pb::Role::Device as i32,
        device_id: device.into(),
        scope_facility_id: scope.into(),
        description: "logger".into(),
        ..Default::default()
    };
    t.create_token(vaxtrace_tests::authed(admin, r)).await.unwrap().into_inner().secret
}

#[tokio::test]
async fn a_district_officers_morning_in_chromium() {
    for db in TestDb::all() {
        let Some(b) = Browser::start("a_district_officers_morning_in_chromium", 1280, 900).await else {
            return;
        };
        let srv = TestServer::start(db).await;
        let name = srv.db.name();
        let base = format!("http://{}", srv.addr);
        let mut w = world(&srv).await;
        let (nu1, n, d, du) = (w.nu1.clone(), w.n.clone(), w.d.clone(), w.du.clone());
        receive(&mut w, &nu1, 0, 100, "").await.unwrap();
        ship(&mut w, &n, &d, &du, 0, 100).await;
        let dio = token(&srv, &w.tok, pb::Role::DistrictOfficer, &w.d).await;
        let (dev, key) = register_logger(&srv, &w.tok, &w.d, &w.du, 600).await;
        // Two quiet hours of readings, so the chart has a history.
        let t0 = Utc::now() - Duration::hours(13);
        let normal: Vec<_> = (0..12).map(|i| (i as u64 + 1, t0 + Duration::minutes(10 * i), 5.0)).collect();
        send_readings(&srv, &dev, &key, &normal).await;

        // Sign in.
        b.goto(&format!("{base}/dash")).await;
        let field = b.wait_for("#token", 10).await;
        b.type_into(&field, &dio).await;
        b.click(&b.find("form button").await).await;
        b.wait_for("table.facilities", 10).await;
        assert!(b.url().await.ends_with("/dash"), "{name}");
        b.screenshot(&format!("dashboard-overview-{name}")).await;

        // Watch a breach appear live on the alert list: the page is not reloaded (a marker set
        // in the page survives) and the row arrives within seconds.
        b.goto(&format!("{base}/dash/alerts")).await;
        b.wait_for("#live-status", 5).await;
        b.eval("window.__stay = 42; return 0;").await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let hot: Vec<_> = (12..75).map(|i| (i as u64 + 1, t0 + Duration::minutes(10 * i), 9.5)).collect();
        send_readings(&srv, &dev, &key, &hot).await;
        // The same readings open an excursion too; either may arrive first.
        b.wait_until(
            "return [...document.querySelectorAll('tr.alert-row.new')].some(r => r.textContent.includes('Heat alarm'));",
            15,
        )
        .await;
        assert_eq!(b.eval("return window.__stay;").await, serde_json::json!(42), "{name}: no reload");
        b.screenshot(&format!("dashboard-live-breach-{name}")).await;

        // Acknowledge it from the page, with the mandatory comment.
        let heat = b.eval("return [...document.querySelectorAll('tr.alert-row')].find(r => r.textContent.includes('Heat alarm')).id;").await;
        let heat = heat.as_str().unwrap().to_owned();
        b.click(&b.find(&format!("#{heat} details summary")).await).await;
        let comment = b.find(&format!("#{heat} textarea[name=comment]")).await;
        b.type_into(&comment, "Fridge door found open; closed it").await;
        b.click(&b.find(&format!("#{heat} form[action$=acknowledge] button")).await).await;
        b.wait_for(".notice.ok", 10).await;
        let row = b.find(&format!("#{heat}")).await;
        assert!(b.text(&row).await.contains("Fridge door found open"), "{name}");

        // The readings come back into range: the alarm ends and the lot waits for assessment.
        send_readings(&srv, &dev, &key, &[(76, t0 + Duration::minutes(750), 5.0)]).await;

        // The facility page: current temperature, a chart with the band, the limits and the
        // alarm shaded; the exposed lot with its assessment form.
        b.goto(&format!("{base}/dash/facilities/{}?range=24h", w.d)).await;
        b.wait_for("figure.chart svg", 10).await;
        let svg = b.eval("return document.querySelector('figure.chart svg').outerHTML;").await;
        let svg = svg.as_str().unwrap();
        assert!(svg.contains("<polygon") && svg.contains("+8 °C") && svg.contains("Heat alarm"), "{name}");
        let now = b.text(&b.find(".temp-now").await).await;
        assert!(now.contains("5.0 °C"), "{name}: {now}");
        b.screenshot(&format!("dashboard-facility-{name}")).await;
        b.click(&b.find("form[action$=assess] input[name=decision][value='1']").await).await;
        b.type_into(&b.find("form[action$=assess] textarea[name=comment]").await, "VVM stage 1, within limits").await;
        b.click(&b.find("form[action$=assess] button").await).await;
        b.wait_for(".notice.ok", 10).await;
        assert!(b.source().await.contains("No exposed lots waiting"), "{name}");

        // A CSV download from the reports page.
        b.goto(&format!("{base}/dash/reports")).await;
        b.click(&b.wait_for("a[href='/dash/reports/stock.csv']", 10).await).await;
        let csv = b.wait_download("stock_on_hand_", 15).await;
        assert!(csv.starts_with("facility_id,"), "{name}: {csv}");
        assert!(csv.contains(",D,") && csv.contains("A1"), "{name}: {csv}");
        b.screenshot(&format!("dashboard-reports-{name}")).await;

        // On a phone the tables become cards and nothing needs sideways scrolling.
        b.phone(390, 844).await;
        b.goto(&format!("{base}/dash")).await;
        b.wait_for("table.facilities", 10).await;
        let overflow = b.eval("return document.documentElement.scrollWidth - window.innerWidth;").await;
        assert!(overflow.as_i64().unwrap_or(1) <= 0, "{name}: the page scrolls sideways by {overflow}");
        b.screenshot(&format!("dashboard-phone-overview-{name}")).await;
        b.goto(&format!("{base}/dash/alerts")).await;
        b.wait_for("table.alerts", 10).await;
        b.screenshot(&format!("dashboard-phone-alerts-{name}")).await;

        b.quit().await;
        srv.stop().await;
    }
}
