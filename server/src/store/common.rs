//! The SQL both engines share. sqlx's SQLite driver accepts `$n` placeholders, so one text serves
//! both; the macro is expanded once per engine with its concrete types (sqlx code generic over
//! the database needs unwieldy bounds). Engine-specific SQL stays in `sqlite.rs` / `postgres.rs`.

/// Column lists, kept next to the row decoders that read them.
pub(crate) const FACILITY_COLS: &str =
    "id, parent_id, kind, code, name, gln, external_id, latitude, longitude, active, path, created_at, updated_at";
pub(crate) const UNIT_COLS: &str = "u.id, u.facility_id, u.kind, u.name, u.temperature_profile, u.capacity_litres, \
     u.active, u.created_at, u.updated_at, u.alarm_overrides";
pub(crate) const PRODUCT_COLS: &str = "id, code, name, vaccine, doses_per_vial, presentation, vvm_type, \
     temperature_profile, acceptable_wastage_bp, multi_dose_vial_policy, gtins, active, created_at, updated_at";
pub(crate) const LOT_COLS: &str = "id, product_id, gtin, lot_number, manufacturer, expiry, created_at";
pub(crate) const TOKEN_COLS: &str =
    "t.id, t.role, t.scope_facility_id, t.device_id, t.description, t.created_at, t.revoked_at";

/// A unit's alarm overrides as stored: JSON text, NULL when there are none.
pub(crate) fn overrides_json(o: &crate::domain::AlarmOverrides) -> crate::error::Result<Option<String>> {
    if o.is_empty() { Ok(None) } else { Ok(Some(serde_json::to_string(o)?)) }
}

/// Decodes stored alarm overrides (NULL = none).
pub(crate) fn overrides_from_json(v: Option<String>) -> crate::error::Result<crate::domain::AlarmOverrides> {
    Ok(v.map(|s| serde_json::from_str(&s)).transpose()?.unwrap_or_default())
}

/// Decodes a stored enum number, treating an unknown one as corruption.
pub(crate) fn decode_enum<T>(v: i32, what: &str, f: impl Fn(i32) -> Option<T>) -> crate::error::Result<T> {
    f(v).ok_or_else(|| crate::error::Error::Internal(format!("stored {what} {v} is unknown")))
}

macro_rules! sql_store_common {
    ($Store:ty, $Db:ty, $Row:ty) => {
        use sqlx::Row as _;
        use $crate::domain::{self as d, Facility, Lot, Page, PageRequest, Product, StorageUnit, Token};
        use $crate::error::{Error, Result};
        use $crate::store::common::*;

        type Tx<'a> = sqlx::Transaction<'a, $Db>;

        fn facility_row(r: &$Row) -> Result<Facility> {
            Ok(Facility {
                id: r.try_get("id")?,
                parent_id: r.try_get("parent_id")?,
                kind: decode_enum(r.try_get("kind")?, "facility kind", d::FacilityKind::from_i32)?,
                code: r.try_get("code")?,
                name: r.try_get("name")?,
                gln: r.try_get("gln")?,
                external_id: r.try_get("external_id")?,
                latitude: r.try_get("latitude")?,
                longitude: r.try_get("longitude")?,
                active: r.try_get("active")?,
                path: r.try_get("path")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        }

        fn unit_row(r: &$Row) -> Result<StorageUnit> {
            unit_row_as(r, "")
        }

        /// A storage unit from columns named with `prefix` (to read it beside its facility).
        fn unit_row_as(r: &$Row, prefix: &str) -> Result<StorageUnit> {
            let c = |name: &str| format!("{prefix}{name}");
            Ok(StorageUnit {
                id: r.try_get(c("id").as_str())?,
                facility_id: r.try_get(c("facility_id").as_str())?,
                kind: decode_enum(r.try_get(c("kind").as_str())?, "storage unit kind", d::StorageUnitKind::from_i32)?,
                name: r.try_get(c("name").as_str())?,
                temperature_profile: decode_enum(
                    r.try_get(c("temperature_profile").as_str())?,
                    "temperature profile",
                    d::TemperatureProfile::from_i32,
                )?,
                capacity_litres: r.try_get(c("capacity_litres").as_str())?,
                active: r.try_get(c("active").as_str())?,
                alarm_overrides: overrides_from_json(r.try_get(c("alarm_overrides").as_str())?)?,
                created_at: r.try_get(c("created_at").as_str())?,
                updated_at: r.try_get(c("updated_at").as_str())?,
            })
        }

        fn product_row(r: &$Row) -> Result<Product> {
            let gtins: String = r.try_get("gtins")?;
            Ok(Product {
                id: r.try_get("id")?,
                code: r.try_get("code")?,
                name: r.try_get("name")?,
                vaccine: r.try_get("vaccine")?,
                doses_per_vial: r.try_get("doses_per_vial")?,
                presentation: decode_enum(r.try_get("presentation")?, "presentation", d::Presentation::from_i32)?,
                vvm_type: decode_enum(r.try_get("vvm_type")?, "VVM type", d::VvmType::from_i32)?,
                temperature_profile: decode_enum(
                    r.try_get("temperature_profile")?,
                    "temperature profile",
                    d::TemperatureProfile::from_i32,
                )?,
                acceptable_wastage_bp: r.try_get("acceptable_wastage_bp")?,
                multi_dose_vial_policy: r.try_get("multi_dose_vial_policy")?,
                gtins: gtins.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
                active: r.try_get("active")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        }

        fn lot_row(r: &$Row) -> Result<Lot> {
            Ok(Lot {
                id: r.try_get("id")?,
                product_id: r.try_get("product_id")?,
                gtin: r.try_get("gtin")?,
                lot_number: r.try_get("lot_number")?,
                manufacturer: r.try_get("manufacturer")?,
                expiry: r.try_get("expiry")?,
                created_at: r.try_get("created_at")?,
            })
        }

        fn token_row(r: &$Row) -> Result<Token> {
            Ok(Token {
                id: r.try_get("id")?,
                role: decode_enum(r.try_get("role")?, "role", d::Role::from_i32)?,
                scope_facility_id: r.try_get("scope_facility_id")?,
                device_id: r.try_get("device_id")?,
                description: r.try_get("description")?,
                created_at: r.try_get("created_at")?,
                revoked_at: r.try_get("revoked_at")?,
            })
        }

        /// Records `response` under `k`: an insert that affects no row when the key already holds
        /// an answer. A key committed without an answer (left by older versions when a revoked
        /// token or a missing object was met) held nothing: this answer becomes it.
        fn push_key_insert(q: &mut sqlx::QueryBuilder<$Db>, k: &d::Idempotency, response: String) {
            push_keys_insert(q, &[(k, response)]);
        }

        /// [`push_key_insert`] for several keys in one statement.
        fn push_keys_insert(q: &mut sqlx::QueryBuilder<$Db>, keys: &[(&d::Idempotency, String)]) {
            q.push("INSERT INTO idempotency_keys (token_id, request_id, method, fingerprint, response, created_at) ");
            let now = d::now();
            q.push_values(keys, |mut b, (k, response)| {
                b.push_bind(k.token_id.clone())
                    .push_bind(k.request_id.clone())
                    .push_bind(k.method)
                    .push_bind(k.fingerprint.clone())
                    .push_bind(response.clone())
                    .push_bind(now);
            });
            q.push(
                " ON CONFLICT (token_id, request_id) DO UPDATE SET response = excluded.response \
                 WHERE idempotency_keys.response = '' AND idempotency_keys.method = excluded.method \
                 AND idempotency_keys.fingerprint = excluded.fingerprint",
            );
        }

        /// What the key holds, read with `exec`: the first answer or refusal, REQUEST_ID_REUSED when
        /// the key was used for a different request, `None` when it holds nothing (yet).
        async fn held_under<'e, E: sqlx::Executor<'e, Database = $Db>>(
            exec: E,
            k: &d::Idempotency,
        ) -> Result<Option<$crate::store::Held>> {
            let row = sqlx::query(
                "SELECT method, fingerprint, response FROM idempotency_keys WHERE token_id = $1 AND request_id = $2",
            )
            .bind(&k.token_id)
            .bind(&k.request_id)
            .fetch_optional(exec)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let method: String = row.try_get("method")?;
            let fingerprint: String = row.try_get("fingerprint")?;
            if method != k.method || fingerprint != k.fingerprint {
                return Ok(Some($crate::store::Held::Refusal(Error::invalid_because(
                    "request_id",
                    $crate::error::reason::REQUEST_ID_REUSED,
                    format!("{} was already used for a different request", k.request_id),
                ))));
            }
            let response: String = row.try_get("response")?;
            if response.is_empty() {
                return Ok(None);
            }
            if let Ok(refused) = serde_json::from_str::<RefusalEnvelope>(&response) {
                return Ok(Some($crate::store::Held::Refusal(Error::from_record(&refused.refused))));
            }
            Ok(Some($crate::store::Held::Answer(response)))
        }

        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RefusalEnvelope {
            refused: $crate::error::ErrorRecord,
        }

        async fn fetch_facility(tx: &mut Tx<'_>, id: &str) -> Result<Option<Facility>> {
            let sql = format!("SELECT {FACILITY_COLS} FROM facilities WHERE id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut **tx).await?;
            row.as_ref().map(facility_row).transpose()
        }

        async fn fetch_unit(tx: &mut Tx<'_>, id: &str) -> Result<Option<(StorageUnit, String)>> {
            let sql = format!(
                "SELECT {UNIT_COLS}, f.path FROM storage_units u JOIN facilities f ON f.id = u.facility_id WHERE u.id = $1"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut **tx).await?;
            match row {
                Some(r) => Ok(Some((unit_row(&r)?, r.try_get("path")?))),
                None => Ok(None),
            }
        }

        async fn fetch_product(tx: &mut Tx<'_>, id: &str) -> Result<Option<Product>> {
            let sql = format!("SELECT {PRODUCT_COLS} FROM products WHERE id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut **tx).await?;
            row.as_ref().map(product_row).transpose()
        }

        async fn write_gtins(tx: &mut Tx<'_>, product_id: &str, gtins: &[String]) -> Result<()> {
            sqlx::query("DELETE FROM product_gtins WHERE product_id = $1").bind(product_id).execute(&mut **tx).await?;
            for g in gtins {
                sqlx::query("INSERT INTO product_gtins (gtin, product_id) VALUES ($1, $2)")
                    .bind(g)
                    .bind(product_id)
                    .execute(&mut **tx)
                    .await
                    .map_err($crate::store::map_unique)?;
            }
            Ok(())
        }

        impl $Store {
            /// Ends a write transaction that did its work with result `r`, recording the result
            /// under the request's key in the same transaction (one insert, at the end).
            ///
            /// The key is written last, not claimed first: a first attempt (nearly every call)
            /// pays one statement for it instead of a claim, a savepoint and an update. Twins in
            /// flight both do the work, but only one commits it: on PostgreSQL the second key
            /// insert waits for the first transaction and then finds the key, so its work is
            /// rolled back and it answers with what the key holds; a later retry does the same
            /// (SQLite's single writer makes every twin such a retry). A refusal (a final
            /// answer, such as INSUFFICIENT_STOCK) rolls the work back and records the refusal
            /// in a transaction of its own, unless the key already holds an answer, which is
            /// then returned: both calls answer alike. Any other error rolls everything back and
            /// records nothing, so a retry runs again, unless the key already holds an answer.
            async fn idem_settle<T: serde::Serialize + serde::de::DeserializeOwned>(
                &self,
                mut tx: Tx<'_>,
                idem: Option<&d::Idempotency>,
                r: Result<T>,
            ) -> Result<T> {
                let Some(k) = idem else {
                    if r.is_ok() {
                        tx.commit().await?;
                    }
                    return r;
                };
                let v = match r {
                    Ok(v) => v,
                    Err(e) => {
                        tx.rollback().await?;
                        return self.refused(k, e).await;
                    }
                };
                let mut q = sqlx::QueryBuilder::<$Db>::new("");
                push_key_insert(&mut q, k, serde_json::to_string(&v)?);
                if q.build().execute(&mut *tx).await?.rows_affected() == 1 {
                    tx.commit().await?;
                    return Ok(v);
                }
                tx.rollback().await?;
                self.held_answer(k).await
            }

            /// Records `e` as the final answer under `k` (nothing written for it): the key's first
            /// answer or refusal when a twin got there first, else `e`.
            async fn refused<T: serde::de::DeserializeOwned>(&self, k: &d::Idempotency, e: Error) -> Result<T> {
                match $crate::store::Store::record_refusal(self, k, &e).await? {
                    Some($crate::store::Held::Answer(json)) => Ok(serde_json::from_str(&json)?),
                    Some($crate::store::Held::Refusal(first)) => Err(first),
                    None => Err(e),
                }
            }

            /// The answer a key already holds, after this call's own attempt to record one met it.
            async fn held_answer<T: serde::de::DeserializeOwned>(&self, k: &d::Idempotency) -> Result<T> {
                match held_under(&self.pool, k).await? {
                    Some($crate::store::Held::Answer(json)) => Ok(serde_json::from_str(&json)?),
                    Some($crate::store::Held::Refusal(e)) => Err(e),
                    None => Err(Error::Internal(format!("request_id {} holds no answer", k.request_id))),
                }
            }

            /// Applies the migrations not yet recorded, each once, in one write transaction;
            /// `preamble` runs first (PostgreSQL takes an advisory lock so replicas starting
            /// together do not race).
            async fn apply_migrations(&self, migrations: &[(i64, &'static str)], preamble: &'static str, create: &'static str) -> Result<()> {
                let mut tx = self.begin_write().await?;
                sqlx::raw_sql(preamble).execute(&mut *tx).await?;
                sqlx::raw_sql(create).execute(&mut *tx).await?;
                for (version, sql) in migrations {
                    let done: Option<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                        .bind(version)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if done.is_none() {
                        tracing::info!(version, engine = ?Self::ENGINE, "applying migration");
                        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
                        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                            .bind(version)
                            .bind(chrono::Utc::now())
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $Store {
            fn engine(&self) -> $crate::store::Engine {
                Self::ENGINE
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn idem_held(&self, idem: &d::Idempotency) -> Result<Option<$crate::store::Held>> {
                held_under(&self.pool, idem).await
            }

            async fn record_refusal(&self, idem: &d::Idempotency, e: &Error) -> Result<Option<$crate::store::Held>> {
                // An error that is no final answer records nothing, but a first answer under the
                // key (a retry meeting an error the first attempt did not) still wins.
                let Some(record) = e.to_record() else { return held_under(&self.pool, idem).await };
                let response = serde_json::to_string(&RefusalEnvelope { refused: record })?;
                // A write transaction: on PostgreSQL the insert waits for a twin still holding the
                // key; on SQLite it queues with the other writers instead of meeting SQLITE_BUSY.
                let mut tx = self.begin_write().await?;
                let inserted = sqlx::query(
                    "INSERT INTO idempotency_keys (token_id, request_id, method, fingerprint, response, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(&idem.token_id)
                .bind(&idem.request_id)
                .bind(idem.method)
                .bind(&idem.fingerprint)
                .bind(&response)
                .bind(d::now())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let mut first = None;
                if inserted == 0 {
                    first = held_under(&mut *tx, idem).await?;
                    if first.is_none() {
                        // The key was committed without an answer (left by older versions): this refusal is it.
                        sqlx::query("UPDATE idempotency_keys SET response = $1 WHERE token_id = $2 AND request_id = $3")
                            .bind(&response)
                            .bind(&idem.token_id)
                            .bind(&idem.request_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await?;
                Ok(first)
            }

            async fn count_tokens(&self) -> Result<i64> {
                Ok(sqlx::query("SELECT COUNT(*) AS n FROM tokens").fetch_one(&self.pool).await?.try_get("n")?)
            }

            async fn find_token(&self, id: &str) -> Result<Option<$crate::store::StoredToken>> {
                let sql = format!(
                    "SELECT {TOKEN_COLS}, t.secret_hash, f.path FROM tokens t \
                     LEFT JOIN facilities f ON f.id = t.scope_facility_id WHERE t.id = $1"
                );
                let Some(r) = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await? else {
                    return Ok(None);
                };
                let path: Option<String> = r.try_get("path")?;
                Ok(Some($crate::store::StoredToken {
                    token: token_row(&r)?,
                    secret_hash: r.try_get("secret_hash")?,
                    scope_path: path.unwrap_or_else(|| "/".to_owned()),
                }))
            }

            async fn insert_token(
                &self,
                idem: Option<&d::Idempotency>,
                new: &d::NewToken,
                id: &str,
                secret_hash: &[u8],
                sealed_secret: Option<&str>,
            ) -> Result<d::token::WithSecret<Token>> {
                let mut tx = self.begin_write().await?;
                let r: Result<d::token::WithSecret<Token>> = async {
                    let now = d::now();
                    sqlx::query(
                        "INSERT INTO tokens (id, secret_hash, role, scope_facility_id, device_id, description, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(id)
                    .bind(secret_hash)
                    .bind(new.role.as_i32())
                    .bind(&new.scope_facility_id)
                    .bind(&new.device_id)
                    .bind(&new.description)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    let token = Token {
                        id: id.to_owned(),
                        role: new.role,
                        scope_facility_id: new.scope_facility_id.clone(),
                        device_id: new.device_id.clone(),
                        description: new.description.clone(),
                        created_at: now,
                        revoked_at: None,
                    };
                    Ok(d::token::WithSecret { value: token, sealed_secret: sealed_secret.map(str::to_owned) })
                }
                .await;
                self.idem_settle(tx, idem, r).await
            }

            async fn list_tokens(&self, include_revoked: bool, page: &PageRequest) -> Result<Page<Token>> {
                let sql = format!(
                    "SELECT {TOKEN_COLS} FROM tokens t WHERE ($1 OR t.revoked_at IS NULL) \
                     AND ($2 IS NULL OR t.id > $2) ORDER BY t.id LIMIT $3"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(include_revoked)
                    .bind(&page.after)
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await?;
                let items = rows.iter().map(token_row).collect::<Result<Vec<_>>>()?;
                Ok(page.finish(items, |t| &t.id))
            }

            async fn revoke_token(&self, idem: Option<&d::Idempotency>, id: &str) -> Result<Option<Token>> {
                let mut tx = self.begin_write().await?;
                let r: Result<Option<Token>> = async {
                    sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                        .bind(d::now())
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    let sql = format!("SELECT {TOKEN_COLS} FROM tokens t WHERE t.id = $1");
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&mut *tx).await?;
                    let token = row.as_ref().map(token_row).transpose()?;
                    Ok(token)
                }
                .await;
                self.idem_settle(tx, idem, r).await
            }

            async fn get_facility(&self, id: &str) -> Result<Option<Facility>> {
                let sql = format!("SELECT {FACILITY_COLS} FROM facilities WHERE id = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(facility_row).transpose()
            }

            async fn insert_facility(
                &self,
                idem: Option<&d::Idempotency>,
                id: &str,
                path: &str,
                new: &d::NewFacility,
            ) -> Result<Facility> {
                let mut tx = self.begin_write().await?;
                let r: Result<Facility> = async {
                    let now = d::now();
                    let f = Facility {
                        id: id.to_owned(),
                        parent_id: new.parent_id.clone(),
                        kind: new.kind,
                        code: new.code.clone(),
                        name: new.name.clone(),
                        gln: new.gln.clone(),
                        external_id: new.external_id.clone(),
                        latitude: new.latitude,
                        longitude: new.longitude,
                        active: true,
                        path: path.to_owned(),
                        created_at: now,
                        updated_at: now,
                    };
                    sqlx::query(
                        "INSERT INTO facilities (id, parent_id, kind, code, name, gln, external_id, latitude, longitude, \
                         active, path, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    )
                    .bind(&f.id)
                    .bind(&f.parent_id)
                    .bind(f.kind.as_i32())
                    .bind(&f.code)
                    .bind(&f.name)
                    .bind(&f.gln)
                    .bind(&f.external_id)
                    .bind(f.latitude)
                    .bind(f.longitude)
                    .bind(f.active)
                    .bind(&f.path)
                    .bind(f.created_at)
                    .bind(f.updated_at)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::store::map_unique)?;
                    Ok(f)
                }
                .await;
                self.idem_settle(tx, idem, r).await
            }

            async fn update_facility(
                &self,
                idem: Option<&d::Idempotency>,
                id: &str,
                patch: &d::FacilityPatch,
            ) -> Result<Option<Facility>> {
                let mut tx = self.begin_write().await?;
                let r: Result<Option<Facility>> = async {
                    let Some(mut f) = fetch_facility(&mut tx, id).await? else { return Ok(None) };
                    patch.apply(&mut f);
                    f.updated_at = d::now();
                    sqlx::query(
                        "UPDATE facilities SET name = $1, gln = $2, external_id = $3, latitude = $4, longitude = $5, \
                         active = $6, updated_at = $7 WHERE id = $8",
                    )
                    .bind(&f.name)
                    .bind(&f.gln)
                    .bind(&f.external_id)
                    .bind(f.latitude)
                    .bind(f.longitude)
                    .bind(f.active)
                    .bind(f.updated_at)
                    .bind(&f.id)
                    .execute(&mut *tx)
                    .await?;
                    Ok(Some(f))
                }
                .await;
                self.idem_settle(tx, idem, r).await
            }

            async fn list_facilities(
                &self,
                scope_path: &str,
                filter: &d::FacilityFilter,
                page: &PageRequest,
            ) -> Result<Page<Facility>> {
                let sql = format!(
                    "SELECT {FACILITY_COLS} FROM facilities WHERE path >= $1 AND path < $2 \
                     AND ($3 IS NULL OR (path > $3 AND path < $4)) AND ($5 IS NULL OR parent_id = $5) \
                     AND ($6 IS NULL OR kind = $6) AND ($7 IS NULL OR lower(name) LIKE $7 ESCAPE '\\') \
                     AND ($8 OR active) AND ($9 IS NULL OR id > $9) ORDER BY id LIMIT $10"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(scope_path)
                    .bind($crate::store::path_upper(scope_path))
                    .bind(&filter.ancestor_path)
                    .bind(filter.ancestor_path.as_deref().map($crate::store::path_upper))
                    .bind(&filter.parent_id)
                    .bind(filter.kind.map(|k| k.as_i32()))
                    .bind(filter.name_contains.as_deref().map($crate::store::like_contains))
                    .bind(filter.include_inactive)
                    .bind(&page.after)
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await?;
                let items = rows.iter().map(facility_row).collect::<Result<Vec<_>>>()?;
                Ok(page.finish(items, |f| &f.id))
            }

            async fn get_storage_unit(&self, id: &str) -> Result<Option<(StorageUnit, String)>> {
                let sql = format!(
                    "SELECT {UNIT_COLS}, f.path FROM storage_units u JOIN facilities f ON f.id = u.facility_id WHERE u.id = $1"
                );
                match sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await? {
                    Some(r) => Ok(Some((unit_row(&r)?, r.try_get("path")?))),
                    None => Ok(None),
                }
            }

            async fn units_with_facility(&self, ids: &[String]) -> Result<Vec<(StorageUnit, Facility)>> {
                static COLS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
                    let f = FACILITY_COLS.split(", ").map(|c| format!("f.{c}")).collect::<Vec<_>>().join(", ");
                    let u = UNIT_COLS.split(", ").map(|c| format!("{c} AS u_{}", &c[2..])).collect::<Vec<_>>().join(", ");
                    format!("SELECT {f}, {u} FROM storage_units u JOIN facilities f ON f.id = u.facility_id WHERE u.id IN ")
                });
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut q = sqlx::QueryBuilder::<$Db>::new(COLS.as_str());
                q.push("(");
                let mut list = q.separated(", ");
                for id in ids.iter().take(1000) {
                    list.push_bind(id.clone());
                }
                list.push_unseparated(")");
                let rows = q.build().fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok((unit_row_as(r, "u_")?, facility_row(r)?))).collect()
            }

            async fn insert_storage_unit(
                &self,
                idem: Option<&d::Idempotency>,
                id: &str,
                new: &d::NewStorageUnit,
            ) -> Result<StorageUnit> {
                let mut tx = self.begin_write().await?;
                let r: Result<StorageUnit> = async {
                    let now = d::now();
                    let u = StorageUnit {
                        id: id.to_owned(),
                        facility_id: new.facility_id.clone(),
                        kind: new.kind,
                        name: new.name.clone(),
                        temperature_profile: new.temperature_profile,
                        capacity_litres: new.capacity_litres,
                        active: true,
                        alarm_overrides: new.alarm_overrides,
                        created_at: now,
                        updated_at: now,
                    };
                    sqlx::query(
                        "INSERT INTO storage_units (id, facility_id, kind, name, temperature_profile, capacity_litres, \
                         active, created_at, updated_at, alarm_overrides) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    )
                    .bind(&u.id)
                    .bind(&u.facility_id)
                    .bind(u.kind.as_i32())
                    .bind(&u.name)
                    .bind(u.temperature_profile.as_i32())
                    .bind(u.capacity_litres)
                    .bind(u.active)
                    .bind(u.created_at)
                    .bind(u.updated_at)
                    .bind(overrides_json(&u.alarm_overrides)?)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::store::map_unique)?;
                    Ok(u)
                }
                .await;
                self.idem_settle(tx, idem, r).await
            }

            async fn update_storage_unit(
                &self,
                idem: Option<&d::Idempotency>,
                id: &str,
                patch: &d::StorageUnitPatch,
            ) -> Result<Option<StorageUnit>> {
                let mut tx = self.begin_write().await?;
                let r: Result<Option<StorageUnit>> = async {
                    let Some((mut u, _)) = fetch_unit(&mut tx, id).await? else { return Ok(None) };
                        // The overrides are checked against the merged unit; a refusal is kept under the key.
                    patch.apply(&mut u)?;
                    u.updated_at = d::now();
                    sqlx::query(
                        "UPDATE storage_units SET name = $1, temperature_profile = $2, capacity_litres = $3, active = $4, \
                         updated_at = $5, alarm_overrides = $6 WHERE id = $7",
                    )
                    .bind(&u.name)
                    .bind(u.temperature_profile.as_i32())
                    .bind(u.capacity_litres)
                    .bind(u.active)
                    .bind(u.updated_at)
                    .bind(overrides_json(&u.alarm_overrides)?)
                    .bind(&u.id)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::store::map_unique)?;
                    Ok(Some(u))
                }
                .await;
                self.idem_settle(tx, idem, r).await
            }

            async fn list_storage_units(
                &self,
                scope_path: &str,
                filter: &d::StorageUnitFilter,
                page: &PageRequest,
            ) -> Result<Page<StorageUnit>> {
                let sql = format!(
                    "SELECT {UNIT_COLS} FROM storage_units u JOIN facilities f ON f.id = u.facility_id \
                     WHERE f.path >= $1 AND f.path < $2 AND ($3 IS NULL OR u.facility_id = $3) \
                     AND ($4 IS NULL OR (f.path >= $4 AND f.path < $5)) AND ($6 OR u.active) \
                     AND ($7 IS NULL OR u.id > $7) ORDER BY u.id LIMIT $8"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(scope_path)
                    .bind($crate::store::path_upper(scope_path))
                    .bind(&filter.facility_id)
                    .bind(&filter.ancestor_path)
                    .bind(filter.ancestor_path.as_deref().map($crate::store::path_upper))
                    .bind(filter.include_inactive)
                    .bind(&page.after)
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await?;
                let items = rows.iter().map(unit_row).collect::<Result<Vec<_>>>()?;
                Ok(page.finish(items, |u| &u.id))
            }

            async fn find_product_by_gtin(&self, gtin: &str) -> Result<Option<Product>> {
                let sql = format!(
                    "SELECT {PRODUCT_COLS} FROM products WHERE id = (SELECT product_id FROM product_gtins WHERE gtin = $1)"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(gtin).fetch_optional(&self.pool).await?;
                row.as_ref().map(product_row).transpose()
            }

            async fn get_product(&self, id: &str) -> Result<Option<Product>> {
                let sql = format!("SELECT {PRODUCT_COLS} FROM products WHERE id = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(product_row).transpose()
            }

            async fn insert_product(
                &self,
                idem: Option<&d::Idempotency>,
                id: &str,
                new: &d::NewProduct,
            ) -> Result<Product> {
                let mut tx = self.begin_write().await?;
                let r: Result<Product> = async {
                    let now = d::now();
                    let p = Product {
                        id: id.to_owned(),
                        code: new.code.clone(),
                        name: new.name.clone(),
                        vaccine: new.vaccine.clone(),
                        doses_per_vial: new.doses_per_vial,
                        presentation: new.presentation,
                        vvm_type: new.vvm_type,
                        temperature_profile: new.temperature_profile,
                        acceptable_wastage_bp: new.acceptable_wastage_bp,
                        multi_dose_vial_policy: new.multi_dose_vial_policy,
                        gtins: new.gtins.clone(),
                        active: true,
                        created_at: now,
                        updated_at: now,
                    };
                    sqlx::query(
                        "INSERT INTO products (id, code, name, vaccine, doses_per_vial, presentation, vvm_type, \
                         temperature_profile, acceptable_wastage_bp, multi_dose_vial_policy, gtins, active, created_at, \
                         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                    )
                    .bind(&p.id)
                    .bind(&p.code)
                    .bind(&p.name)
                    .bind(&p.vaccine)
                    .bind(p.doses_per_vial)
                    .bind(p.presentation.as_i32())
                    .bind(p.vvm_type.as_i32())
                    .bind(p.temperature_profile.as_i32())
                    .bind(p.acceptable_wastage_bp)
                    .bind(p.multi_dose_vial_policy)
                    .bind(p.gtins.join(","))
                    .bind(p.active)
                    .bind(p.created_at)
                    .bind(p.updated_at)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::store::map_unique)?;
                    write_gtins(&mut tx, &p.id, &p.gtins).await?;
                    Ok(p)
                }
                .await;
                self.idem_settle(tx, idem, r).await
            }

            async fn update_product(
                &self,
                idem: Option<&d::Idempotency>,
                id: &str,
                patch: &d::ProductPatch,
            ) -> Result<Option<Product>> {
                let mut tx = self.begin_write().await?;
                let r: Result<Option<Product>> = async {
                    let Some(mut p) = fetch_product(&mut tx, id).await? else { return Ok(None) };
                    patch.apply(&mut p);
                    p.updated_at = d::now();
                    sqlx::query(
                        "UPDATE products SET name = $1, acceptable_wastage_bp = $2, multi_dose_vial_policy = $3, \
                         gtins = $4, active = $5, updated_at = $6 WHERE id = $7",
                    )
                    .bind(&p.name)
                    .bind(p.acceptable_wastage_bp)
                    .bind(p.multi_dose_vial_policy)
                    .bind(p.gtins.join(","))
                    .bind(p.active)
                    .bind(p.updated_at)
                    .bind(&p.id)
                    .execute(&mut *tx)
                    .await?;
                    if patch.gtins.is_some() {
                        write_gtins(&mut tx, &p.id, &p.gtins).await?;
                    }
                    Ok(Some(p))
                }
                .await;
                self.idem_settle(tx, idem, r).await
            }

            async fn list_products(&self, include_inactive: bool, page: &PageRequest) -> Result<Page<Product>> {
                let sql = format!(
                    "SELECT {PRODUCT_COLS} FROM products WHERE ($1 OR active) AND ($2 IS NULL OR id > $2) \
                     ORDER BY id LIMIT $3"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(include_inactive)
                    .bind(&page.after)
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await?;
                let items = rows.iter().map(product_row).collect::<Result<Vec<_>>>()?;
                Ok(page.finish(items, |p| &p.id))
            }

            async fn get_lot(&self, id: &str) -> Result<Option<Lot>> {
                let sql = format!("SELECT {LOT_COLS} FROM lots WHERE id = $1");
                let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(lot_row).transpose()
            }

            async fn insert_lot(&self, idem: Option<&d::Idempotency>, id: &str, new: &d::NewLot) -> Result<Lot> {
                let mut tx = self.begin_write().await?;
                let r: Result<Lot> = async {
                    let l = Lot {
                        id: id.to_owned(),
                        product_id: new.product_id.clone(),
                        gtin: new.gtin.clone(),
                        lot_number: new.lot_number.clone(),
                        manufacturer: new.manufacturer.clone(),
                        expiry: new.expiry,
                        created_at: d::now(),
                    };
                    sqlx::query(
                        "INSERT INTO lots (id, product_id, gtin, lot_number, manufacturer, expiry, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&l.id)
                    .bind(&l.product_id)
                    .bind(&l.gtin)
                    .bind(&l.lot_number)
                    .bind(&l.manufacturer)
                    .bind(l.expiry)
                    .bind(l.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err($crate::store::map_unique)?;
                    Ok(l)
                }
                .await;
                self.idem_settle(tx, idem, r).await
            }

            async fn list_lots(
                &self,
                product_id: Option<&str>,
                expires_before: Option<chrono::NaiveDate>,
                page: &PageRequest,
            ) -> Result<Page<Lot>> {
                let sql = format!(
                    "SELECT {LOT_COLS} FROM lots WHERE ($1 IS NULL OR product_id = $1) \
                     AND ($2 IS NULL OR expiry <= $2) AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(product_id)
                    .bind(expires_before)
                    .bind(&page.after)
                    .bind(page.fetch_limit())
                    .fetch_all(&self.pool)
                    .await?;
                let items = rows.iter().map(lot_row).collect::<Result<Vec<_>>>()?;
                Ok(page.finish(items, |l| &l.id))
            }
        }
    };
}
