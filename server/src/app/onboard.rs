//! Onboarding use cases for the operator's CLI (which holds the database itself, so no caller
//! or scope applies): validate and import CSV files all-or-nothing, export the same formats and a
//! unit's readings, back up, and manage tokens.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::App;
use crate::domain::telemetry::{ReadingCursor, ReadingSource, TimeRange};
use crate::domain::{PageRequest, Token, now, validate};
use crate::error::{Error, Result};
use crate::onboard::export::{self, ExportFile, ExportOptions};
use crate::onboard::plan::{self, ImportSummary};
use crate::onboard::rows::{self, Rows};
use crate::onboard::{ImportOptions, IssuedSecret, Problem, Progress, SourceFile};

/// What an import did, or (dry run, or problems) would have done.
#[derive(Debug, Clone, Default)]
pub struct ImportOutcome {
    /// New and unchanged rows per kind.
    pub summary: ImportSummary,
    /// Every problem; when there is any, nothing was written.
    pub problems: Vec<Problem>,
    /// Secrets created (tokens, generated device keys): shown once, empty unless written.
    pub secrets: Vec<IssuedSecret>,
    /// Whether the database was changed.
    pub written: bool,
    /// Data rows read from the files (valid ones).
    pub rows_read: usize,
    /// Rows written (0 unless written).
    pub rows_written: usize,
    /// Time spent reading the database and validating.
    pub validate_time: Duration,
    /// Time spent writing (the transaction).
    pub write_time: Duration,
}

impl App {
    /// Validates files against the database and, unless `dry_run` or a problem is found, writes
    /// everything they add in one transaction. Importing the same files again changes nothing.
    pub async fn import_files(
        &self,
        files: &[SourceFile],
        opts: &ImportOptions,
        dry_run: bool,
        progress: &dyn Progress,
    ) -> Result<ImportOutcome> {
        let started = Instant::now();
        let mut problems = Vec::new();
        let rows = rows::parse_files(files, &opts.levels, &mut problems);
        self.import_rows(rows, problems, dry_run, progress, started).await
    }

    /// [`App::import_files`] after parsing, with the problems parsing found.
    async fn import_rows(
        &self,
        rows: Rows,
        mut problems: Vec<Problem>,
        dry_run: bool,
        progress: &dyn Progress,
        started: Instant,
    ) -> Result<ImportOutcome> {
        let with_keys = rows.devices.iter().any(|d| d.row.key.is_some());
        let snap = self.store.onboard_snapshot(with_keys).await?;
        progress.start("validating", u64::try_from(rows.len()).unwrap_or(u64::MAX));
        let planned = plan::build(&rows, &snap, now());
        progress.advance(u64::try_from(rows.len()).unwrap_or(u64::MAX));
        progress.finish();
        problems.extend(planned.problems);
        crate::onboard::sort_problems(&mut problems);
        let mut out = ImportOutcome {
            summary: planned.summary,
            problems,
            rows_read: rows.len(),
            validate_time: started.elapsed(),
            ..ImportOutcome::default()
        };
        if dry_run || !out.problems.is_empty() || planned.plan.is_empty() {
            return Ok(out);
        }
        let write = Instant::now();
        self.store.import_batch(&planned.plan, progress).await?;
        out.write_time = write.elapsed();
        out.written = true;
        out.rows_written = planned.plan.rows();
        out.secrets = planned.secrets;
        Ok(out)
    }

    /// Every entity in the import formats (see [`export::render`]).
    pub async fn export_files(&self, opts: ExportOptions) -> Result<Vec<ExportFile>> {
        let snap = self.store.onboard_snapshot(opts.include_device_keys).await?;
        Ok(export::render(&snap, opts))
    }

    /// The storage unit `unit_name` of the facility `facility_code`, by id.
    pub async fn find_unit(&self, facility_code: &str, unit_name: &str) -> Result<String> {
        let snap = self.store.onboard_snapshot(false).await?;
        let facility = snap.facilities.iter().find(|f| f.code == facility_code).ok_or_else(|| {
            Error::not_found("FACILITY_NOT_FOUND", format!("no facility with code '{facility_code}'"))
        })?;
        snap.units
            .iter()
            .find(|u| u.facility_id == facility.id && u.name == unit_name)
            .map(|u| u.id.clone())
            .ok_or_else(|| {
                Error::not_found(
                    "STORAGE_UNIT_NOT_FOUND",
                    format!("no storage unit '{unit_name}' at '{facility_code}'"),
                )
            })
    }

    /// Writes the readings taken in a storage unit in `[start, end)` as CSV, in reading-time
    /// order, page by page (memory stays flat whatever the range); returns the count.
    pub async fn export_readings(
        &self,
        storage_unit_id: &str,
        start: DateTime<Utc>,
        end: Option<DateTime<Utc>>,
        out: &mut (dyn std::io::Write + Send),
        progress: &dyn Progress,
    ) -> Result<u64> {
        const PAGE: i64 = 1000;
        let unit = validate::id("unit", storage_unit_id)?;
        if self.store.get_storage_unit(&unit).await?.is_none() {
            return Err(Error::not_found("STORAGE_UNIT_NOT_FOUND", format!("no storage unit {unit}")));
        }
        let range = TimeRange::parse(Some(start), end, now())?;
        let source = ReadingSource::StorageUnit(unit);
        let io = |e: csv::Error| Error::Internal(format!("cannot write the export: {e}"));
        let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(out);
        w.write_record(export::READING_COLUMNS.iter().map(|c| c.name)).map_err(io)?;
        let mut serials: std::collections::HashMap<String, String> = std::collections::HashMap::new();
        let mut after: Option<ReadingCursor> = None;
        let mut count = 0u64;
        progress.start("readings", 0);
        loop {
            let rows = self.store.list_readings("/", &source, &range, after.as_ref(), PAGE).await?;
            for r in &rows {
                if !serials.contains_key(&r.device_id) {
                    let serial =
                        self.store.get_device(&r.device_id).await?.map(|(d, _, _)| d.serial).unwrap_or_default();
                    serials.insert(r.device_id.clone(), serial);
                }
                let serial = serials.get(&r.device_id).map_or("", String::as_str);
                w.write_record(export::reading_row(r, serial)).map_err(io)?;
            }
            count += u64::try_from(rows.len()).unwrap_or(0);
            progress.advance(u64::try_from(rows.len()).unwrap_or(0));
            match rows.last() {
                Some(last) if i64::try_from(rows.len()).unwrap_or(0) == PAGE => {
                    after = Some(ReadingCursor::after(last))
                }
                _ => break,
            }
        }
        w.flush().map_err(|e| Error::Internal(format!("cannot write the export: {e}")))?;
        progress.finish();
        Ok(count)
    }

    /// Writes a consistent copy of a SQLite database to `path`.
    pub async fn backup(&self, path: &str) -> Result<()> {
        self.store.backup_to(path).await
    }

    /// Every token (revoked ones too when asked), by id: for the operator's CLI.
    pub async fn list_tokens_local(&self, include_revoked: bool) -> Result<Vec<Token>> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let page = PageRequest::parse(1000, &token, &include_revoked)?;
            let p = self.store.list_tokens(include_revoked, &page).await?;
            out.extend(p.items);
            if p.next_page_token.is_empty() {
                return Ok(out);
            }
            token = p.next_page_token;
        }
    }

    /// Revokes a token without a caller: for the operator's CLI. `None` when it does not exist.
    pub async fn revoke_token_local(&self, id: &str) -> Result<Option<Token>> {
        let revoked = self.store.revoke_token(None, id).await;
        self.tokens.forget(id);
        revoked
    }
}
