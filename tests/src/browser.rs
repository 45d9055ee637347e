//! A small WebDriver client for browser tests in real headless Chromium (Debian's `chromium` and
//! `chromium-driver`). Without them a test gets `None` and says it was skipped, unless
//! `VAXTRACE_REQUIRE_BROWSER=1` (CI), where a missing browser fails the test instead.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One headless Chromium, driven through its own chromedriver process.
pub struct Browser {
    http: Client<HttpConnector, Full<Bytes>>,
    base: String,
    session: String,
    driver: tokio::process::Child,
    /// Where downloads land.
    pub downloads: PathBuf,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("driver", &self.base).field("session", &self.session).finish()
    }
}

/// A found element.
#[derive(Debug, Clone)]
pub struct Element(String);

fn binary(env: &str, default: &str) -> Option<PathBuf> {
    let p = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    p.exists().then_some(p)
}

/// Where screenshots go: `target/screenshots/` of the workspace.
pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

impl Browser {
    /// Starts Chromium at a window size, or `None` (with a message) when it is not installed.
    pub async fn start(test: &str, width: u32, height: u32) -> Option<Browser> {
        let driver = binary("VAXTRACE_CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = binary("VAXTRACE_CHROMIUM", "/usr/bin/chromium");
        let (Some(driver), Some(chromium)) = (driver, chromium) else {
            if std::env::var("VAXTRACE_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
                panic!("{test}: VAXTRACE_REQUIRE_BROWSER=1 but chromium/chromedriver are not installed");
            }
            eprintln!("{test}: SKIPPED — install chromium and chromium-driver to run the browser tests");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).ok()?;
        let child = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let http = Client::builder(TokioExecutor::new()).build_http();
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().expect("profile dir");
        let downloads = profile.path().join("downloads");
        std::fs::create_dir_all(&downloads).expect("downloads dir");
        let mut b = Browser { http, base, session: String::new(), driver: child, downloads, _profile: profile };
        for _ in 0..100 {
            if b.call("GET", "/status", None).await.is_ok_and(|v| v["value"]["ready"] == json!(true)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", format!("--window-size={width},{height}"),
                         format!("--user-data-dir={}", b._profile.path().join("chrome").display())],
                "prefs": {"download.default_directory": b.downloads.to_string_lossy(),
                          "download.prompt_for_download": false}
            }
        }}});
        let v = b.call("POST", "/session", Some(caps)).await.expect("new WebDriver session");
        b.session = v["value"]["sessionId"].as_str().expect("session id").to_owned();
        // Headless Chromium ignores the window size for downloads unless told where to save them.
        let _ = b
            .cmd(
                "POST",
                "/goog/cdp/execute",
                json!({"cmd": "Browser.setDownloadBehavior", "params": {"behavior": "allow", "downloadPath": b.downloads.to_string_lossy()}}),
            )
            .await;
        Some(b)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = self.http.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if status.is_success() { Ok(v) } else { Err(format!("{method} {path}: {status} {}", v["value"])) }
    }

    async fn cmd(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let body = if method == "GET" || method == "DELETE" { None } else { Some(body) };
        self.call(method, &format!("/session/{}{path}", self.session), body).await.map(|v| v["value"].clone())
    }

    /// Opens a URL.
    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({"url": url})).await.expect("navigate");
    }

    /// Resizes the window (a phone is about 390 × 844 CSS pixels).
    pub async fn resize(&self, width: u32, height: u32) {
        self.cmd("POST", "/window/rect", json!({"width": width, "height": height})).await.expect("resize");
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", json!({})).await.expect("url").as_str().unwrap_or_default().to_owned()
    }

    /// The first element matching a CSS selector, if any.
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        let v = self.cmd("POST", "/element", json!({"using": "css selector", "value": css})).await.ok()?;
        v[ELEMENT].as_str().map(|id| Element(id.to_owned()))
    }

    /// Waits up to `secs` for an element matching a CSS selector.
    pub async fn wait_for(&self, css: &str, secs: u64) -> Element {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(e) = self.try_find(css).await {
                return e;
            }
            if tokio::time::Instant::now() > deadline {
                let html = self.source().await;
                panic!("no element {css:?} after {secs} s; page:\n{}", &html[..html.len().min(4000)]);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to `secs` for a script to return `true`.
    pub async fn wait_until(&self, script: &str, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while self.eval(script).await != json!(true) {
            if tokio::time::Instant::now() > deadline {
                let html = self.source().await;
                panic!("{script:?} not true after {secs} s; page:\n{}", &html[..html.len().min(4000)]);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The first element matching a CSS selector (it must be there now).
    pub async fn find(&self, css: &str) -> Element {
        self.wait_for(css, 5).await
    }

    /// Clicks an element.
    pub async fn click(&self, e: &Element) {
        self.cmd("POST", &format!("/element/{}/click", e.0), json!({})).await.expect("click");
    }

    /// Types into an element.
    pub async fn type_into(&self, e: &Element, text: &str) {
        self.cmd("POST", &format!("/element/{}/value", e.0), json!({"text": text})).await.expect("type");
    }

    /// Clears an input.
    pub async fn clear(&self, e: &Element) {
        self.cmd("POST", &format!("/element/{}/clear", e.0), json!({})).await.expect("clear");
    }

    /// An element's visible text.
    pub async fn text(&self, e: &Element) -> String {
        self.cmd("GET", &format!("/element/{}/text", e.0), json!({}))
            .await
            .expect("text")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The page's HTML.
    pub async fn source(&self) -> String {
        self.cmd("GET", "/source", json!({}))
            .await
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    }

    /// Runs a script in the page and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.cmd("POST", "/execute/sync", json!({"script": script, "args": []})).await.expect("execute script")
    }

    /// Saves a PNG screenshot as `target/screenshots/{name}.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.cmd("GET", "/screenshot", json!({})).await.expect("screenshot");
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()).expect("base64 PNG");
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Waits up to `secs` for a finished download whose name starts with `prefix`; returns its text.
    pub async fn wait_download(&self, prefix: &str, secs: u64) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(dir) = std::fs::read_dir(&self.downloads) {
                for f in dir.flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    if name.starts_with(prefix) && !name.ends_with(".crdownload") {
                        return std::fs::read_to_string(f.path()).expect("read download");
                    }
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no download {prefix}* after {secs} s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Shows pages as a phone of `width` × `height` CSS pixels would (touch, mobile viewport):
    /// a headless window cannot be narrower than 500 pixels, wider than most phones.
    pub async fn phone(&self, width: u32, height: u32) {
        let params = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": true});
        self.cmd("POST", "/goog/cdp/execute", json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": params}))
            .await
            .expect("phone viewport");
    }

    /// Ends the session and the driver.
    pub async fn quit(mut self) {
        let _ = self.call("DELETE", &format!("/session/{}", self.session), None).await;
        let _ = self.driver.kill().await;
    }
}
