//! Plain HTTP against the server's pages, for tests that need no browser: a cookie jar of one
//! session, GET and form POST.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A response: status, headers, body.
#[derive(Debug)]
pub struct Page {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Body text.
    pub body: String,
}

impl Page {
    /// A header's value.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The value of the first `name="…" value="…"` hidden field in the page.
    pub fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        self.body
            .split_once(&marker)
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(v, _)| v.replace("&amp;", "&"))
            .unwrap_or_default()
    }
}

/// One browser-like client with its session cookie.
#[derive(Debug, Clone)]
pub struct Web {
    http: Client<HttpConnector, Full<Bytes>>,
    base: String,
    /// The session cookie (`vxt_session=…`), once signed in.
    pub cookie: String,
}

/// Form-encodes fields.
pub fn form(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    fields.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

impl Web {
    /// A client of the server at `addr`.
    pub fn new(addr: std::net::SocketAddr) -> Web {
        Web {
            http: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
            cookie: String::new(),
        }
    }

    async fn send(&self, method: &str, path: &str, body: Option<String>) -> Page {
        self.send_with(method, path, body, &[]).await
    }

    async fn send_with(&self, method: &str, path: &str, body: Option<String>, extra: &[(&str, &str)]) -> Page {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("accept", "text/html")
            .header("host", self.base.trim_start_matches("http://"));
        if !self.cookie.is_empty() {
            req = req.header("cookie", &self.cookie);
        }
        if body.is_some() {
            req = req.header("content-type", "application/x-www-form-urlencoded");
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).expect("request");
        let resp = self.http.request(req).await.expect("HTTP request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        Page { status, headers, body: String::from_utf8_lossy(&bytes).into_owned() }
    }

    /// GET a path.
    pub async fn get(&self, path: &str) -> Page {
        self.send("GET", path, None).await
    }

    /// POST a form.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.send("POST", path, Some(form(fields))).await
    }

    /// POST a form with extra request headers.
    pub async fn post_with(&self, path: &str, fields: &[(&str, &str)], headers: &[(&str, &str)]) -> Page {
        self.send_with("POST", path, Some(form(fields)), headers).await
    }

    /// Signs in with a token and keeps the session cookie; returns the sign-in response.
    pub async fn sign_in(&mut self, token: &str) -> Page {
        let p = self.post("/signin", &[("token", token)]).await;
        if let Some(c) = p.header("set-cookie").split(';').next().filter(|c| c.starts_with("vxt_session=")) {
            self.cookie = c.to_owned();
        }
        p
    }
}
