//! Onboarding a country: the CSV formats of the bulk import and export, row parsing, validation
//! against what the database already holds, the DHIS2 organisation-unit mapping, and the export
//! rendering. Everything here is pure (no SQL, no network): the app layer reads a [`Snapshot`]
//! from the store, [`plan::build`] turns files plus snapshot into an [`ImportPlan`] or a list of
//! [`Problem`]s, and the store writes the plan in one transaction.
//!
//! The formats are documented column by column in `onboarding/README.md`; [`format::FILES`] is
//! the single source of the column lists (the templates are checked against it by a test).

pub mod dhis2;
pub mod export;
pub mod format;
pub mod plan;
pub mod progress;
pub mod rows;

use std::fmt;
use std::path::Path;

pub use plan::{ImportOptions, ImportPlan, ImportSummary, Snapshot};
pub use progress::{ConsoleProgress, NoProgress, Progress};

/// The request_id of the ledger entries that book opening balances: how a second import of the
/// same balances finds the first (one opening balance per storage unit and lot, ever).
pub const OPENING_BALANCE_REQUEST_ID: &str = "onboarding:opening-balance";
/// The actor recorded on everything the importer writes (ledger entries, policies).
pub const ACTOR: &str = "onboarding";

/// One thing wrong with the input, located so a person can fix it in a spreadsheet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Problem {
    /// File name, for example `facilities.csv`.
    pub file: String,
    /// 1-based line of the record (the header is line 1); 0 for the file as a whole.
    pub line: u64,
    /// Column name as in the header; empty for the row or file as a whole.
    pub column: String,
    /// What is wrong and, where it helps, how to fix it.
    pub reason: String,
}

impl Problem {
    /// A problem at a file, line and column.
    pub fn new(file: &str, line: u64, column: &str, reason: impl Into<String>) -> Self {
        Problem { file: file.to_owned(), line, column: column.to_owned(), reason: reason.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `file:line:column: reason`, the shape editors and CI annotate from.
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if !self.column.is_empty() {
                write!(f, ":{}", self.column)?;
            }
        }
        write!(f, ": {}", self.reason)
    }
}

/// One input file: its name (which says what it holds) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// File name without directory, for example `facilities.csv`.
    pub name: String,
    /// Raw content (UTF-8 CSV, an optional byte-order mark is ignored).
    pub bytes: Vec<u8>,
}

/// Reads every `*.csv` file of a directory (not recursive), sorted by name.
pub fn read_dir(dir: &Path) -> std::io::Result<Vec<SourceFile>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        if !is_csv || !entry.file_type()?.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        files.push(SourceFile { name, bytes: std::fs::read(&path)? });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// Sorts problems by file (in import order), line and column, so a report reads top to bottom.
pub fn sort_problems(problems: &mut [Problem]) {
    problems.sort_by(|a, b| {
        (format::file_rank(&a.file), &a.file, a.line, &a.column, &a.reason).cmp(&(
            format::file_rank(&b.file),
            &b.file,
            b.line,
            &b.column,
            &b.reason,
        ))
    });
}

/// A secret created by an import, shown once: a token's bearer string or a logger's HMAC key.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedSecret {
    /// `token` or `device_key`.
    pub kind: &'static str,
    /// What it belongs to: the token's description (with role and scope) or the device serial.
    pub subject: String,
    /// The object's id (token id or device id).
    pub id: String,
    /// The bearer string or the key in hex.
    pub secret: String,
}

impl fmt::Debug for IssuedSecret {
    // Secrets never reach logs, even through a stray `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedSecret")
            .field("kind", &self.kind)
            .field("subject", &self.subject)
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Renders issued secrets as CSV (`kind,subject,id,secret`) for `--secrets-out`.
pub fn secrets_csv(secrets: &[IssuedSecret]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    // Writing to a Vec cannot fail; errors are ignored rather than unwrapped.
    let _ = w.write_record(["kind", "subject", "id", "secret"]);
    for s in secrets {
        let _ = w.write_record([s.kind, s.subject.as_str(), s.id.as_str(), s.secret.as_str()]);
    }
    w.into_inner().unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn problems_print_as_file_line_column() {
        assert_eq!(Problem::new("f.csv", 3, "code", "bad").to_string(), "f.csv:3:code: bad");
        assert_eq!(Problem::new("f.csv", 3, "", "bad").to_string(), "f.csv:3: bad");
        assert_eq!(Problem::new("f.csv", 0, "", "bad").to_string(), "f.csv: bad");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = IssuedSecret { kind: "token", subject: "x".into(), id: "1".into(), secret: "vxt_abc".into() };
        assert!(!format!("{s:?}").contains("vxt_abc"));
        assert!(String::from_utf8_lossy(&secrets_csv(&[s])).contains("vxt_abc"));
    }
}
