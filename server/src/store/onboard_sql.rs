//! Onboarding's SQL, shared by both engines like `common.rs` (expanded after the other store
//! macros, so it uses their row decoders and the ledger's `post_in`). An import is written in
//! one transaction with multi-row INSERTs: a fixed number of statements per thousand rows, not
//! one round trip per row.

/// Rows per multi-row INSERT: at most 15 parameters each, far below SQLite's 32,766.
pub(crate) const IMPORT_CHUNK: usize = 1000;

macro_rules! sql_onboard_store {
    ($Store:ty, $Db:ty, $Row:ty) => {
        use $crate::onboard::plan::{BalanceLine, ImportPlan, Snapshot};
        use $crate::onboard::Progress;
        use $crate::store::onboard_sql::IMPORT_CHUNK;

        fn balance_line(r: &$Row) -> Result<BalanceLine> {
            Ok(BalanceLine {
                storage_unit_id: r.try_get("storage_unit_id")?,
                lot_id: r.try_get("lot_id")?,
                vials: r.try_get("vials")?,
            })
        }

        fn chunk_len(n: usize) -> u64 {
            u64::try_from(n).unwrap_or(u64::MAX)
        }

        #[async_trait::async_trait]
        impl $crate::store::OnboardStore for $Store {
            #[tracing::instrument(skip_all)]
            async fn onboard_snapshot(&self, with_device_keys: bool) -> Result<Snapshot> {
                let pool = &self.pool;
                let sql = format!("SELECT {FACILITY_COLS} FROM facilities");
                let facilities = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(facility_row)
                    .collect::<Result<Vec<_>>>()?;
                let sql = format!("SELECT {UNIT_COLS} FROM storage_units u");
                let units =
                    sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?.iter().map(unit_row).collect::<Result<Vec<_>>>()?;
                let sql = format!("SELECT {PRODUCT_COLS} FROM products");
                let products = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(product_row)
                    .collect::<Result<Vec<_>>>()?;
                let sql = format!("SELECT {LOT_COLS} FROM lots");
                let lots =
                    sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?.iter().map(lot_row).collect::<Result<Vec<_>>>()?;
                let balances = sqlx::query("SELECT storage_unit_id, lot_id, vials FROM stock_balances WHERE vials > 0")
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(balance_line)
                    .collect::<Result<Vec<_>>>()?;
                let opening = sqlx::query(
                    "SELECT storage_unit_id, lot_id, CAST(SUM(quantity_vials) AS BIGINT) AS vials FROM ledger_entries \
                     WHERE request_id = $1 AND kind = $2 AND storage_unit_id IS NOT NULL GROUP BY storage_unit_id, lot_id",
                )
                .bind($crate::onboard::OPENING_BALANCE_REQUEST_ID)
                .bind(st::EntryKind::Receipt.as_i32())
                .fetch_all(pool)
                .await?
                .iter()
                .map(balance_line)
                .collect::<Result<Vec<_>>>()?;
                let policies = sqlx::query(
                    "SELECT facility_id, product_id, min_doses, max_doses, updated_at, updated_by FROM stock_policies",
                )
                .fetch_all(pool)
                .await?
                .iter()
                .map(policy_row)
                .collect::<Result<Vec<_>>>()?;
                let mut probes: std::collections::HashMap<String, Vec<tm::Probe>> = std::collections::HashMap::new();
                for r in sqlx::query("SELECT device_id, probe, storage_unit_id, label FROM device_probes ORDER BY device_id, probe")
                    .fetch_all(pool)
                    .await?
                {
                    let probe: i32 = r.try_get("probe")?;
                    probes.entry(r.try_get("device_id")?).or_default().push(tm::Probe {
                        index: u32::try_from(probe).unwrap_or(0),
                        storage_unit_id: r.try_get("storage_unit_id")?,
                        label: r.try_get("label")?,
                    });
                }
                let sql = format!("SELECT {DEVICE_COLS}, d.hmac_key FROM devices d");
                let mut devices = Vec::new();
                let mut device_keys = std::collections::HashMap::new();
                for r in sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await? {
                    let id: String = r.try_get("id")?;
                    let d = device_row(&r, probes.remove(&id).unwrap_or_default())?;
                    if with_device_keys {
                        device_keys.insert(id, r.try_get::<Vec<u8>, _>("hmac_key")?);
                    }
                    devices.push(d);
                }
                let sql = format!("SELECT {TOKEN_COLS} FROM tokens t WHERE t.revoked_at IS NULL");
                let tokens =
                    sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?.iter().map(token_row).collect::<Result<Vec<_>>>()?;
                Ok(Snapshot { facilities, units, products, lots, balances, opening, policies, devices, device_keys, tokens })
            }

            #[tracing::instrument(skip_all, fields(rows = plan.rows()))]
            async fn import_batch(&self, plan: &ImportPlan, progress: &dyn Progress) -> Result<()> {
                let mut tx = self.begin_write().await?;
                // Imports take turns (PostgreSQL; SQLite's IMMEDIATE transaction already does), so
                // the opening-balance check below cannot pass twice for the same balance.
                sqlx::raw_sql(Self::ONBOARD_LOCK).execute(&mut *tx).await?;
                if let Some(op) = &plan.opening {
                    let booked: std::collections::HashSet<(String, String)> = sqlx::query(
                        "SELECT DISTINCT storage_unit_id, lot_id FROM ledger_entries WHERE request_id = $1 \
                         AND storage_unit_id IS NOT NULL",
                    )
                    .bind($crate::onboard::OPENING_BALANCE_REQUEST_ID)
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|r| Ok((r.try_get("storage_unit_id")?, r.try_get("lot_id")?)))
                    .collect::<Result<_>>()?;
                    let again = op.drafts.iter().any(|d| {
                        d.storage_unit_id.as_ref().is_some_and(|u| booked.contains(&(u.clone(), d.lot_id.clone())))
                    });
                    if again {
                        return Err(Error::precondition(
                            "CONCURRENT_IMPORT",
                            "another import booked some of these opening balances meanwhile; run the import again",
                        ));
                    }
                }

                progress.start("facilities", chunk_len(plan.facilities.len()));
                for chunk in plan.facilities.chunks(IMPORT_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO facilities (id, parent_id, kind, code, name, gln, external_id, latitude, longitude, \
                         active, path, created_at, updated_at) ",
                    );
                    q.push_values(chunk, |mut b, f| {
                        b.push_bind(&f.id)
                            .push_bind(&f.parent_id)
                            .push_bind(f.kind.as_i32())
                            .push_bind(&f.code)
                            .push_bind(&f.name)
                            .push_bind(&f.gln)
                            .push_bind(&f.external_id)
                            .push_bind(f.latitude)
                            .push_bind(f.longitude)
                            .push_bind(f.active)
                            .push_bind(&f.path)
                            .push_bind(f.created_at)
                            .push_bind(f.updated_at);
                    });
                    q.build().execute(&mut *tx).await.map_err($crate::store::map_unique)?;
                    progress.advance(chunk_len(chunk.len()));
                }
                progress.finish();

                progress.start("storage units", chunk_len(plan.units.len()));
                for chunk in plan.units.chunks(IMPORT_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO storage_units (id, facility_id, kind, name, temperature_profile, capacity_litres, \
                         active, created_at, updated_at, alarm_overrides) ",
                    );
                    // Encoded up front: push_values cannot return an error.
                    let overrides = chunk.iter().map(|u| overrides_json(&u.alarm_overrides)).collect::<Result<Vec<_>>>()?;
                    q.push_values(chunk.iter().zip(overrides), |mut b, (u, overrides)| {
                        b.push_bind(&u.id)
                            .push_bind(&u.facility_id)
                            .push_bind(u.kind.as_i32())
                            .push_bind(&u.name)
                            .push_bind(u.temperature_profile.as_i32())
                            .push_bind(u.capacity_litres)
                            .push_bind(u.active)
                            .push_bind(u.created_at)
                            .push_bind(u.updated_at)
                            .push_bind(overrides);
                    });
                    q.build().execute(&mut *tx).await.map_err($crate::store::map_unique)?;
                    progress.advance(chunk_len(chunk.len()));
                }
                progress.finish();

                progress.start("products", chunk_len(plan.products.len()));
                for chunk in plan.products.chunks(IMPORT_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO products (id, code, name, vaccine, doses_per_vial, presentation, vvm_type, \
                         temperature_profile, acceptable_wastage_bp, multi_dose_vial_policy, gtins, active, created_at, \
                         updated_at) ",
                    );
                    q.push_values(chunk, |mut b, p| {
                        b.push_bind(&p.id)
                            .push_bind(&p.code)
                            .push_bind(&p.name)
                            .push_bind(&p.vaccine)
                            .push_bind(p.doses_per_vial)
                            .push_bind(p.presentation.as_i32())
                            .push_bind(p.vvm_type.as_i32())
                            .push_bind(p.temperature_profile.as_i32())
                            .push_bind(p.acceptable_wastage_bp)
                            .push_bind(p.multi_dose_vial_policy)
                            .push_bind(p.gtins.join(","))
                            .push_bind(p.active)
                            .push_bind(p.created_at)
                            .push_bind(p.updated_at);
                    });
                    q.build().execute(&mut *tx).await.map_err($crate::store::map_unique)?;
                    let gtins: Vec<(&str, &str)> =
                        chunk.iter().flat_map(|p| p.gtins.iter().map(move |g| (g.as_str(), p.id.as_str()))).collect();
                    for g in gtins.chunks(IMPORT_CHUNK) {
                        let mut q = sqlx::QueryBuilder::<$Db>::new("INSERT INTO product_gtins (gtin, product_id) ");
                        q.push_values(g, |mut b, (gtin, id)| {
                            b.push_bind(*gtin).push_bind(*id);
                        });
                        q.build().execute(&mut *tx).await.map_err($crate::store::map_unique)?;
                    }
                    progress.advance(chunk_len(chunk.len()));
                }
                progress.finish();

                progress.start("lots", chunk_len(plan.lots.len()));
                for chunk in plan.lots.chunks(IMPORT_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO lots (id, product_id, gtin, lot_number, manufacturer, expiry, created_at) ",
                    );
                    q.push_values(chunk, |mut b, l| {
                        b.push_bind(&l.id)
                            .push_bind(&l.product_id)
                            .push_bind(&l.gtin)
                            .push_bind(&l.lot_number)
                            .push_bind(&l.manufacturer)
                            .push_bind(l.expiry)
                            .push_bind(l.created_at);
                    });
                    q.build().execute(&mut *tx).await.map_err($crate::store::map_unique)?;
                    progress.advance(chunk_len(chunk.len()));
                }
                progress.finish();

                if let Some(op) = &plan.opening {
                    progress.start("opening balances", chunk_len(op.drafts.len()));
                    // The ledger's own writer: entries and balances in step, balance = Σ entries.
                    post_in(&mut tx, op).await?;
                    progress.advance(chunk_len(op.drafts.len()));
                    progress.finish();
                }

                progress.start("policies", chunk_len(plan.policies.len()));
                for chunk in plan.policies.chunks(IMPORT_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO stock_policies (facility_id, product_id, min_doses, max_doses, updated_at, updated_by) ",
                    );
                    q.push_values(chunk, |mut b, p| {
                        b.push_bind(&p.facility_id)
                            .push_bind(&p.product_id)
                            .push_bind(p.min_doses)
                            .push_bind(p.max_doses)
                            .push_bind(p.updated_at)
                            .push_bind(&p.updated_by);
                    });
                    q.build().execute(&mut *tx).await?;
                    progress.advance(chunk_len(chunk.len()));
                }
                progress.finish();

                progress.start("devices", chunk_len(plan.devices.len()));
                for chunk in plan.devices.chunks(IMPORT_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO devices (id, serial, name, model, facility_id, expected_interval_secs, \
                         unsigned_allowed, hmac_key, key_version, key_rotated_at, last_seq, online, active, created_at, \
                         updated_at) ",
                    );
                    q.push_values(chunk, |mut b, (d, key)| {
                        b.push_bind(&d.id)
                            .push_bind(&d.serial)
                            .push_bind(&d.name)
                            .push_bind(&d.model)
                            .push_bind(&d.facility_id)
                            .push_bind(d.expected_interval_secs)
                            .push_bind(d.unsigned_allowed)
                            .push_bind(key.as_slice())
                            .push_bind(d.key_version)
                            .push_bind(d.key_rotated_at)
                            .push_bind(d.last_seq)
                            .push_bind(d.online)
                            .push_bind(d.active)
                            .push_bind(d.created_at)
                            .push_bind(d.updated_at);
                    });
                    q.build().execute(&mut *tx).await.map_err(|e| match $crate::store::map_unique(e) {
                        Error::AlreadyExists { .. } => {
                            Error::exists("DUPLICATE_SERIAL", "a device with one of these serials is registered")
                        }
                        other => other,
                    })?;
                    let probes: Vec<(&str, &tm::Probe)> =
                        chunk.iter().flat_map(|(d, _)| d.probes.iter().map(move |p| (d.id.as_str(), p))).collect();
                    for ps in probes.chunks(IMPORT_CHUNK) {
                        let mut q =
                            sqlx::QueryBuilder::<$Db>::new("INSERT INTO device_probes (device_id, probe, storage_unit_id, label) ");
                        q.push_values(ps, |mut b, (id, p)| {
                            b.push_bind(*id)
                                .push_bind(i32::try_from(p.index).unwrap_or(i32::MAX))
                                .push_bind(&p.storage_unit_id)
                                .push_bind(&p.label);
                        });
                        q.build().execute(&mut *tx).await?;
                    }
                    progress.advance(chunk_len(chunk.len()));
                }
                progress.finish();

                progress.start("tokens", chunk_len(plan.tokens.len()));
                for chunk in plan.tokens.chunks(IMPORT_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$Db>::new(
                        "INSERT INTO tokens (id, secret_hash, role, scope_facility_id, device_id, description, created_at) ",
                    );
                    q.push_values(chunk, |mut b, (t, hash)| {
                        b.push_bind(&t.id)
                            .push_bind(hash.as_slice())
                            .push_bind(t.role.as_i32())
                            .push_bind(&t.scope_facility_id)
                            .push_bind(&t.device_id)
                            .push_bind(&t.description)
                            .push_bind(t.created_at);
                    });
                    q.build().execute(&mut *tx).await?;
                    progress.advance(chunk_len(chunk.len()));
                }
                progress.finish();
                tx.commit().await?;
                Ok(())
            }

            async fn backup_to(&self, path: &str) -> Result<()> {
                self.backup_into(path).await
            }
        }
    };
}
