//! Web sign-in sessions for the dashboard and the stock desk: a browser signs in once with its
//! token and then carries an HttpOnly cookie instead of the token.

use chrono::{Duration, Utc};

use super::App;
use crate::domain::authz::{Caller, Role};
use crate::domain::token;
use crate::error::{Error, Result};
use crate::store::WebSession;

/// How long a sign-in lasts: one working day, so a shared office computer does not stay signed in.
pub const SESSION_HOURS: i64 = 12;

/// A session signed in: the cookie secret (shown to the browser once) and the session.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The cookie value.
    pub secret: String,
    /// The stored session.
    pub session: WebSession,
}

impl App {
    /// Checks a bearer token and opens a web session acting with it. Device tokens cannot sign in.
    pub async fn sign_in(&self, bearer: &str) -> Result<NewSession> {
        let caller = self.authenticate(bearer.trim()).await?;
        if caller.role == Role::Device {
            return Err(Error::PermissionDenied);
        }
        let secret = token::random_secret();
        let csrf = token::random_secret();
        let now = Utc::now();
        let session = WebSession {
            token_id: caller.token_id,
            csrf,
            created_at: now,
            expires_at: now + Duration::hours(SESSION_HOURS),
        };
        self.store.insert_web_session(&session, &token::hash(&secret)).await?;
        Ok(NewSession { secret, session })
    }

    /// The caller and session behind a cookie secret; expired sessions and revoked tokens are
    /// UNAUTHENTICATED.
    pub async fn session_caller(&self, secret: &str) -> Result<(Caller, WebSession)> {
        if secret.is_empty() || secret.len() > 200 {
            return Err(Error::Unauthenticated);
        }
        let session = self.store.find_web_session(&token::hash(secret)).await?.ok_or(Error::Unauthenticated)?;
        if session.expires_at <= Utc::now() {
            return Err(Error::Unauthenticated);
        }
        let stored = self.stored_token(&session.token_id).await?;
        Ok((Self::caller_of(stored), session))
    }

    /// Ends the session behind a cookie secret (nothing happens if there is none).
    pub async fn sign_out(&self, secret: &str) -> Result<()> {
        if secret.is_empty() || secret.len() > 200 {
            return Ok(());
        }
        self.store.delete_web_session(&token::hash(secret)).await
    }
}
