//! The bulk import (`vaxtrace-server import DIR`, the pages' upload): CSV files parsed into rows,
//! then planned against an empty database. Input: the files' bytes separated by 0xFF (never in
//! UTF-8), the n-th chunk named like the n-th format (facilities.csv, storage_units.csv, ...,
//! tokens.csv, then DHIS2's organisationUnits.csv).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vaxtrace_server::onboard::format::{DHIS2_ORG_UNITS, FILES};
use vaxtrace_server::onboard::{Snapshot, SourceFile, plan, rows, sort_problems};

fuzz_target!(|data: &[u8]| {
    let names = FILES.iter().map(|f| f.name).chain([DHIS2_ORG_UNITS]);
    let files: Vec<SourceFile> = names
        .zip(data.split(|&b| b == 0xFF))
        .filter(|(_, bytes)| !bytes.is_empty())
        .map(|(name, bytes)| SourceFile { name: name.to_owned(), bytes: bytes.to_vec() })
        .collect();
    let mut problems = Vec::new();
    let parsed = rows::parse_files(&files, &Default::default(), &mut problems);
    let planned = plan::build(&parsed, &Snapshot::default(), vaxtrace_fuzz::now());
    problems.extend(planned.problems);
    sort_problems(&mut problems);
    for p in &problems {
        // Problems are printed to the person importing: rendering them must not fail either.
        let _ = p.to_string();
    }
});
