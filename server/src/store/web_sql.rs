//! Web sign-in sessions, shared by both engines like `common.rs`.

macro_rules! sql_web_store {
    ($Store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::WebSessionStore for $Store {
            async fn insert_web_session(&self, s: &$crate::store::WebSession, secret_hash: &[u8]) -> Result<()> {
                let mut tx = self.begin_write().await?;
                // Expired sessions are swept here rather than by a timer: sign-ins are rare.
                sqlx::query("DELETE FROM web_sessions WHERE expires_at < $1").bind(d::now()).execute(&mut *tx).await?;
                sqlx::query(
                    "INSERT INTO web_sessions (secret_hash, token_id, csrf, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(secret_hash)
                .bind(&s.token_id)
                .bind(&s.csrf)
                .bind(s.created_at)
                .bind(s.expires_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn find_web_session(&self, secret_hash: &[u8]) -> Result<Option<$crate::store::WebSession>> {
                let row = sqlx::query(
                    "SELECT token_id, csrf, created_at, expires_at FROM web_sessions WHERE secret_hash = $1",
                )
                .bind(secret_hash)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|r| {
                    Ok($crate::store::WebSession {
                        token_id: r.try_get("token_id")?,
                        csrf: r.try_get("csrf")?,
                        created_at: r.try_get("created_at")?,
                        expires_at: r.try_get("expires_at")?,
                    })
                })
                .transpose()
            }

            async fn delete_web_session(&self, secret_hash: &[u8]) -> Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::query("DELETE FROM web_sessions WHERE secret_hash = $1")
                    .bind(secret_hash)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
        }
    };
}
