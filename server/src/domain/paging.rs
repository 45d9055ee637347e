//! Keyset pagination. A page token carries the last id and a fingerprint of the filters; the
//! caller's scope is never in it, so a token cannot widen what a caller sees.

use base64::Engine as _;

use crate::error::{Error, Result};

/// The default page size.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// The largest page size.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The longest key a page token may carry.
const MAX_KEY_LEN: usize = 128;

/// A validated page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Rows to return.
    pub size: usize,
    /// Return rows whose id is greater than this.
    pub after: Option<String>,
    fingerprint: String,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// Token for the next page; empty at the end.
    pub next_page_token: String,
}

impl PageRequest {
    /// Validates size and token; `filters` is any stable rendering of the request's filters.
    pub fn parse(page_size: i32, page_token: &str, filters: &impl std::fmt::Debug) -> Result<Self> {
        let size = match page_size {
            n if n < 0 => return Err(Error::invalid("page_size", "must not be negative")),
            0 => DEFAULT_PAGE_SIZE,
            n => usize::try_from(n).unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE),
        };
        let fingerprint = super::token::sha256_hex(format!("{filters:?}").as_bytes())[..16].to_owned();
        let after = if page_token.is_empty() {
            None
        } else {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(page_token)
                .map_err(|_| Error::InvalidPageToken)?;
            let raw = String::from_utf8(raw).map_err(|_| Error::InvalidPageToken)?;
            let (fp, last) = raw.split_once('|').ok_or(Error::InvalidPageToken)?;
            // Room for composite keys (two ids, or a reading's time, seq and device id).
            if fp != fingerprint || last.is_empty() || last.len() > MAX_KEY_LEN {
                return Err(Error::InvalidPageToken);
            }
            Some(last.to_owned())
        };
        Ok(PageRequest { size, after, fingerprint })
    }

    /// How many rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::try_from(self.size).unwrap_or(1000) + 1
    }

    /// Builds the page from `size + 1` fetched rows ordered by id.
    pub fn finish<T>(&self, rows: Vec<T>, id_of: impl Fn(&T) -> &str) -> Page<T> {
        self.finish_keyed(rows, |r| id_of(r).to_owned())
    }

    /// Builds the page from `size + 1` fetched rows in key order; `key_of` renders the key the
    /// next page resumes after (computed for the last row only).
    pub fn finish_keyed<T>(&self, mut rows: Vec<T>, key_of: impl Fn(&T) -> String) -> Page<T> {
        let next_page_token = if rows.len() > self.size {
            rows.truncate(self.size);
            rows.last()
                .map(|last| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
                        "{}|{}",
                        self.fingerprint,
                        key_of(last)
                    ))
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Page { items: rows, next_page_token }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert!(PageRequest::parse(-1, "", &()).is_err());
        assert_eq!(PageRequest::parse(0, "", &()).map(|p| p.size).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(PageRequest::parse(i32::MAX, "", &()).map(|p| p.size).ok(), Some(MAX_PAGE_SIZE));
    }

    #[test]
    fn token_is_bound_to_filters() {
        let p = PageRequest::parse(1, "", &("a",)).expect("valid");
        let page = p.finish(vec!["x".to_string(), "y".to_string()], |s| s.as_str());
        assert_eq!(page.items, vec!["x".to_string()]);
        let next = PageRequest::parse(1, &page.next_page_token, &("a",)).expect("same filters");
        assert_eq!(next.after.as_deref(), Some("x"));
        assert_eq!(PageRequest::parse(1, &page.next_page_token, &("b",)), Err(Error::InvalidPageToken));
        assert_eq!(PageRequest::parse(1, "!!!", &("a",)), Err(Error::InvalidPageToken));
    }

    #[test]
    fn composite_keys_fit() {
        // Two UUIDs joined by '|' (ListBalances' key) must survive the round trip.
        let key = format!("{0}|{0}", "0190f3e2-7c1a-7abc-8def-0123456789ab");
        let p = PageRequest::parse(1, "", &()).expect("valid");
        let page = p.finish_keyed(vec![1, 2], |_| key.clone());
        let next = PageRequest::parse(1, &page.next_page_token, &()).expect("same filters");
        assert_eq!(next.after, Some(key));
    }
}
