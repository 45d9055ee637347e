//! Validation against GS1's EPCIS 2.0 JSON Schema (draft-07), shipped in `tests/data/epcis/` with
//! GS1's example documents (see `SOURCE.md` there), so that an EPCIS export can be checked in tests.
//!
//! Fully offline: the schema is compiled into the binary, refers only to its own `#/definitions`,
//! and the validator is built with retrieval disabled, so no `$ref` can ever trigger a fetch.
//! `format` is asserted (`date-time`, `uri`), which the schema relies on: e.g. unknown event fields
//! are only rejected because `propertyNames` must then be URIs (`example:myField`).

use std::sync::LazyLock;

use jsonschema::{Draft, Validator};
use serde_json::Value;

/// The schema text, exactly as published by GS1.
pub const SCHEMA: &str = include_str!("../data/epcis/EPCIS-JSON-Schema.json");

/// A GS1 example document (file name inside `tests/data/epcis/`), parsed.
///
/// # Panics
/// If the file is missing or not JSON: these are fixed files of this repository.
pub fn example(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/epcis").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

static VALIDATOR: LazyLock<Validator> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(SCHEMA).expect("tests/data/epcis/EPCIS-JSON-Schema.json is not JSON");
    jsonschema::options()
        .with_draft(Draft::Draft7)
        .should_validate_formats(true)
        .offline()
        .build(&schema)
        .unwrap_or_else(|e| panic!("the EPCIS JSON Schema does not compile: {e}"))
});

/// The longest message kept per error; `anyOf` failures otherwise repeat the whole failing object.
const MAX_MESSAGE: usize = 300;

/// Validates `doc` (an EPCISDocument, or a standalone event with `@context`) against the EPCIS 2.0
/// JSON Schema. On failure, one line per error: the JSON pointer of the failing value (`(root)` for
/// the document itself), a colon, and the validator's message.
pub fn validate(doc: &Value) -> Result<(), Vec<String>> {
    let errors: Vec<String> = VALIDATOR
        .iter_errors(doc)
        .map(|e| {
            let path = e.instance_path().to_string();
            let path = if path.is_empty() { "(root)".to_owned() } else { path };
            let mut msg = e.to_string();
            if let Some((cut, _)) = msg.char_indices().nth(MAX_MESSAGE) {
                msg.truncate(cut);
                msg.push('…');
            }
            format!("{path}: {msg}")
        })
        .collect();
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}
