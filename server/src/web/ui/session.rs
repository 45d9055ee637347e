//! Signing in and out, the start page and the language switch.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::i18n::Lang;
use super::page::{LANG_COOKIE, SESSION_COOKIE, cookie, error_page, esc, lang_of, notice, page_headers};
use crate::app::web::SESSION_HOURS;
use crate::domain::authz::Role;
use crate::error::Error;
use crate::web::WebState;

/// `/`: the page a signed-in person starts from (the dashboard or the stock desk).
pub(super) async fn home(State(s): State<WebState>, headers: HeaderMap) -> Response {
    let secret = cookie(&headers, SESSION_COOKIE).unwrap_or("");
    match s.app.session_caller(secret).await {
        Ok((c, _)) if c.role == Role::DepotManager => Redirect::to("/desk").into_response(),
        Ok(_) => Redirect::to("/dash").into_response(),
        Err(_) => Redirect::to("/signin").into_response(),
    }
}

/// Query of the sign-in page.
#[derive(Debug, Deserialize)]
pub(super) struct Next {
    next: Option<String>,
}

/// Only a path on this site may follow sign-in: never another site (an open redirect).
pub(crate) fn safe_next(next: Option<&str>) -> &str {
    // Browsers drop tabs and line breaks inside URLs, so `/\t/evil.example` would become
    // `//evil.example`: no control characters or spaces at all, no second slash, no backslash.
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.bytes().any(|b| b < 0x21 || b == 0x7f) =>
        {
            n
        }
        _ => "/",
    }
}

/// Whether a form post came from another site (the browser says so in `Sec-Fetch-Site`, or an
/// `Origin` names another host): signing someone in with an attacker's token is refused.
fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site.eq_ignore_ascii_case("cross-site");
    }
    match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (Some(origin), Some(host)) if origin != "null" => origin.split_once("://").map(|(_, h)| h) != Some(host),
        (Some(_), _) => true,
        _ => false,
    }
}

fn sign_in_form(lang: Lang, next: &str, message: Option<&str>) -> String {
    let t = lang.strings();
    let other = lang.other();
    format!(
        r#"<!doctype html><html lang="{lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>{title} · vaxtrace</title><link rel="stylesheet" href="/assets/{css}"></head><body><main id="main" class="narrow"><p class="brand">vaxtrace</p><h1>{title}</h1>{msg}<form method="post" action="/signin"><input type="hidden" name="next" value="{next}"><label for="token">{label}</label><input id="token" name="token" type="password" autocomplete="current-password" required autofocus spellcheck="false"><p class="help">{help}</p><button>{title}</button></form><p><a href="/lang/{ocode}" lang="{ocode}">{oname}</a></p></main></body></html>"#,
        lang = lang.code(),
        title = esc(t.sign_in),
        css = super::assets::CSS_NAME.as_str(),
        msg = message.map(|m| notice(false, m)).unwrap_or_default(),
        next = esc(next),
        label = esc(t.token_label),
        help = esc(t.token_help),
        ocode = other.code(),
        oname = esc(other.name()),
    )
}

/// `GET /signin`.
pub(super) async fn sign_in_page(headers: HeaderMap, Query(q): Query<Next>) -> Response {
    let lang = lang_of(&headers);
    (page_headers(), Html(sign_in_form(lang, safe_next(q.next.as_deref()), None))).into_response()
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub(super) struct SignInForm {
    token: String,
    next: Option<String>,
}

fn secure(s: &WebState, headers: &HeaderMap) -> bool {
    // Behind a TLS-terminating proxy the server itself sees plain HTTP.
    s.tls
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn session_cookie(value: &str, max_age_secs: i64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    ))
    .ok()
}

/// `POST /signin`: checks the token, opens a session and sets its cookie.
pub(super) async fn sign_in(State(s): State<WebState>, headers: HeaderMap, Form(f): Form<SignInForm>) -> Response {
    let lang = lang_of(&headers);
    let t = lang.strings();
    let next = safe_next(f.next.as_deref()).to_owned();
    if cross_site(&headers) {
        return super::page::plain_error(StatusCode::FORBIDDEN, t.error_forged);
    }
    match s.app.sign_in(&f.token).await {
        Ok(new) => {
            let mut r = Redirect::to(&next).into_response();
            if let Some(c) = session_cookie(&new.secret, SESSION_HOURS * 3600, secure(&s, &headers)) {
                r.headers_mut().insert(header::SET_COOKIE, c);
            }
            r
        }
        Err(e @ (Error::Unauthenticated | Error::PermissionDenied)) => {
            let msg = if matches!(e, Error::PermissionDenied) { t.sign_in_device } else { t.sign_in_failed };
            (StatusCode::UNAUTHORIZED, page_headers(), Html(sign_in_form(lang, &next, Some(msg)))).into_response()
        }
        Err(e) => error_page(lang, e),
    }
}

/// The sign-out form.
#[derive(Debug, Deserialize)]
pub(super) struct SignOutForm {
    csrf: String,
}

/// `POST /signout`: ends the session everywhere and clears the cookie. Only a form of the
/// session itself may do it, so another site cannot sign people out.
pub(super) async fn sign_out(State(s): State<WebState>, headers: HeaderMap, Form(f): Form<SignOutForm>) -> Response {
    let lang = lang_of(&headers);
    let secret = cookie(&headers, SESSION_COOKIE).unwrap_or("");
    if let Ok((_, session)) = s.app.session_caller(secret).await {
        use subtle::ConstantTimeEq as _;
        if !bool::from(session.csrf.as_bytes().ct_eq(f.csrf.as_bytes())) {
            return super::page::plain_error(StatusCode::FORBIDDEN, lang.strings().error_forged);
        }
        if let Err(e) = s.app.sign_out(secret).await {
            return error_page(lang, e);
        }
    }
    let mut r = Redirect::to("/signin").into_response();
    if let Some(c) = session_cookie("", 0, secure(&s, &headers)) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// `GET /lang/{code}`: remembers the language for a year and goes back where the person was.
pub(super) async fn set_language(Path(code): Path<String>, headers: HeaderMap) -> Response {
    let lang = Lang::from_code(&code).unwrap_or(Lang::En);
    // Back to the same page of this site only (the Referer is never trusted as a destination elsewhere).
    let back = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| {
            let host = headers.get(header::HOST)?.to_str().ok()?;
            let rest = r.split_once("://")?.1;
            let path = rest.strip_prefix(host)?;
            Some(safe_next(Some(path)).to_owned())
        })
        .unwrap_or_else(|| "/".to_owned());
    let mut r = Redirect::to(&back).into_response();
    if let Ok(c) =
        HeaderValue::from_str(&format!("{LANG_COOKIE}={}; Path=/; SameSite=Lax; Max-Age=31536000", lang.code()))
    {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_only_returns_to_this_site() {
        assert_eq!(safe_next(Some("/dash/alerts?state=open")), "/dash/alerts?state=open");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
        assert_eq!(safe_next(Some("/\t/evil.example/")), "/");
        assert_eq!(safe_next(Some("/\n")), "/");
        assert_eq!(safe_next(Some("/ /x")), "/");
    }

    #[test]
    fn sign_in_from_another_site_is_recognised() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(cross_site(&h(&[("sec-fetch-site", "cross-site")])));
        assert!(!cross_site(&h(&[("sec-fetch-site", "same-origin")])));
        assert!(cross_site(&h(&[("origin", "https://evil.example"), ("host", "vaxtrace.example")])));
        assert!(!cross_site(&h(&[("origin", "https://vaxtrace.example"), ("host", "vaxtrace.example")])));
        assert!(!cross_site(&h(&[("host", "vaxtrace.example")])), "no Origin: a plain client, not a browser");
    }
}
