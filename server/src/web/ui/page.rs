//! What every page shares: the signed-in user (an extractor), the layout, escaping, the
//! anti-forgery check and the error page.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq as _;

use super::i18n::{Lang, Strings};
use crate::domain::authz::{Caller, Role};
use crate::error::Error;
use crate::web::WebState;

/// The session cookie.
pub(crate) const SESSION_COOKIE: &str = "vxt_session";
/// The language cookie.
pub(crate) const LANG_COOKIE: &str = "vxt_lang";

/// A signed-in request: who, in which language, and the session's anti-forgery value.
#[derive(Debug, Clone)]
pub(crate) struct Ui {
    /// The caller the session acts as.
    pub caller: Caller,
    /// The value every form must echo in `csrf`.
    pub csrf: String,
    /// The page language.
    pub lang: Lang,
}

impl Ui {
    /// The strings of the page language.
    pub fn t(&self) -> &'static Strings {
        self.lang.strings()
    }

    /// The refusal of a form whose anti-forgery value is not this session's (a forged cross-site post).
    pub fn refuse_forged(&self, presented: &str) -> Option<Response> {
        if presented.as_bytes().ct_eq(self.csrf.as_bytes()).into() {
            None
        } else {
            Some(plain_error(StatusCode::FORBIDDEN, self.t().error_forged))
        }
    }

    /// The hidden fields every form carries: the anti-forgery value and a fresh request_id, so
    /// that sending the same rendered form twice acts once.
    pub fn form_keys(&self) -> String {
        format!(
            r#"<input type="hidden" name="csrf" value="{}"><input type="hidden" name="request_id" value="{}">"#,
            esc(&self.csrf),
            uuid::Uuid::now_v7()
        )
    }

    /// Whether the caller reads a district or more (dashboard) rather than running one store.
    pub fn is_officer(&self) -> bool {
        matches!(self.caller.role, Role::Admin | Role::NationalOfficer | Role::DistrictOfficer)
    }
}

/// The value of one cookie of a request.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The page language: the cookie, else the browser's preference, else English.
pub(crate) fn lang_of(headers: &HeaderMap) -> Lang {
    if let Some(l) = cookie(headers, LANG_COOKIE).and_then(Lang::from_code) {
        return l;
    }
    let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
    accept
        .split(',')
        .next()
        .and_then(|first| Lang::from_code(first.split(['-', ';']).next().unwrap_or("").trim()))
        .unwrap_or(Lang::En)
}

impl FromRequestParts<WebState> for Ui {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &WebState) -> Result<Self, Self::Rejection> {
        let lang = lang_of(&parts.headers);
        let secret = cookie(&parts.headers, SESSION_COOKIE).unwrap_or("");
        match s.app.session_caller(secret).await {
            Ok((caller, session)) => Ok(Ui { caller, csrf: session.csrf, lang }),
            Err(Error::Unauthenticated) => {
                // Scripts (live updates, chart data) get a status they can act on; people get the sign-in page.
                let wants_html = parts
                    .headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|a| a.contains("text/html"));
                if wants_html {
                    let next = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                    let next: String = form_urlencoded_byte_serialize(next);
                    Err(Redirect::to(&format!("/signin?next={next}")).into_response())
                } else {
                    Err(plain_error(StatusCode::UNAUTHORIZED, lang.strings().error_signed_out))
                }
            }
            Err(e) => Err(error_page(lang, e)),
        }
    }
}

fn form_urlencoded_byte_serialize(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Escapes text for HTML content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Which section of the navigation a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    /// Dashboard overview.
    Overview,
    /// Alerts list.
    Alerts,
    /// Reports.
    Reports,
    /// A facility page.
    Facility,
    /// The stock desk.
    Desk,
}

/// Headers every page carries: no caching of scoped data, and a policy that lets the page load
/// nothing but its own server's assets.
pub(crate) fn page_headers() -> [(header::HeaderName, HeaderValue); 5] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                 frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ),
        ),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("same-origin")),
    ]
}

/// A whole page: header with navigation, the body, and the script.
pub(crate) fn layout(ui: &Ui, title: &str, nav: Nav, body: &str) -> Response {
    let t = ui.t();
    let link = |href: &str, label: &str, this: Nav| {
        let current = if nav == this { r#" aria-current="page""# } else { "" };
        format!(r#"<a href="{href}"{current}>{}</a>"#, esc(label))
    };
    let mut links = String::new();
    if ui.is_officer() {
        links.push_str(&link("/dash", t.nav_overview, Nav::Overview));
        links.push_str(&link("/dash/alerts", t.nav_alerts, Nav::Alerts));
        links.push_str(&link("/dash/reports", t.nav_reports, Nav::Reports));
    }
    if matches!(ui.caller.role, Role::DepotManager | Role::Admin) {
        links.push_str(&link("/desk", t.nav_desk, Nav::Desk));
    }
    let other = ui.lang.other();
    let html = format!(
        r##"<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>{title} · vaxtrace</title><link rel="stylesheet" href="/assets/{css}"><script src="/assets/{js}" defer></script></head><body><a class="skip" href="#main">{skip}</a><header><span class="brand">vaxtrace</span><nav aria-label="{navlabel}">{links}</nav><div class="me"><a href="/lang/{ocode}" lang="{ocode}">{oname}</a><form method="post" action="/signout"><input type="hidden" name="csrf" value="{csrf}"><button class="link">{signout}</button></form></div></header><main id="main"><h1>{title}</h1>{body}</main></body></html>"##,
        lang = ui.lang.code(),
        title = esc(title),
        css = super::assets::CSS_NAME.as_str(),
        js = super::assets::JS_NAME.as_str(),
        skip = esc(t.skip_to_content),
        navlabel = esc(t.nav_label),
        ocode = other.code(),
        oname = esc(other.name()),
        csrf = esc(&ui.csrf),
        signout = esc(t.sign_out),
    );
    (page_headers(), Html(html)).into_response()
}

/// A page-less error (a forged form, a script that lost its session).
pub(crate) fn plain_error(code: StatusCode, msg: &str) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{msg}\n")).into_response()
}

/// An error as a small page with the reason, and a way back.
pub(crate) fn error_page(lang: Lang, e: Error) -> Response {
    let t = lang.strings();
    let (code, msg) = error_text(t, e);
    let html = format!(
        r#"<!doctype html><html lang="{}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>{} · vaxtrace</title><link rel="stylesheet" href="/assets/{}"></head><body><main id="main"><h1>{}</h1><p class="error" role="alert">{}</p><p><a href="/">{}</a></p></main></body></html>"#,
        lang.code(),
        esc(t.error_title),
        super::assets::CSS_NAME.as_str(),
        esc(t.error_title),
        esc(&msg),
        esc(t.back_home),
    );
    (code, page_headers(), Html(html)).into_response()
}

/// The HTTP status and the sentence to show for an error.
pub(crate) fn error_text(t: &Strings, e: Error) -> (StatusCode, String) {
    use tonic_types::StatusExt as _;
    let status = tonic::Status::from(e);
    let reason = status.get_error_details().error_info().map(|i| i.reason.clone()).unwrap_or_default();
    let code = crate::web::api::http_status(status.code());
    let msg = match code {
        StatusCode::FORBIDDEN => t.error_forbidden.to_owned(),
        StatusCode::UNAUTHORIZED => t.error_signed_out.to_owned(),
        StatusCode::INTERNAL_SERVER_ERROR | StatusCode::SERVICE_UNAVAILABLE => t.error_internal.to_owned(),
        _ if reason.is_empty() => status.message().to_owned(),
        _ => format!("{} ({reason})", status.message()),
    };
    (code, msg)
}

/// A notice box (success or failure) shown above a form or a result.
pub(crate) fn notice(ok: bool, text: &str) -> String {
    if ok {
        format!(r#"<p class="notice ok" role="status">✔ {}</p>"#, esc(text))
    } else {
        format!(r#"<p class="notice error" role="alert">✖ {}</p>"#, esc(text))
    }
}

/// Formats a time for people: UTC, to the minute.
pub(crate) fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Formats a whole number with thousands separators.
pub(crate) fn num(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Formats basis points as a percentage.
pub(crate) fn pct(bp: i32) -> String {
    format!("{:.1} %", f64::from(bp) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(esc(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn formats_numbers_for_people() {
        assert_eq!(num(0), "0");
        assert_eq!(num(999), "999");
        assert_eq!(num(1000), "1,000");
        assert_eq!(num(-1234567), "-1,234,567");
        assert_eq!(pct(1050), "10.5 %");
    }

    #[test]
    fn reads_cookies_and_language() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; vxt_session=abc; vxt_lang=hi"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(lang_of(&h), Lang::Hi);
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("hi-IN,hi;q=0.9,en;q=0.8"));
        assert_eq!(lang_of(&h), Lang::Hi);
        assert_eq!(lang_of(&HeaderMap::new()), Lang::En);
    }
}
