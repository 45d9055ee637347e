//! The supported Application Identifiers and their formats (GS1 General Specifications).

/// How long an AI's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Length {
    /// Exactly this many characters; never needs a separator in the raw form.
    Fixed(usize),
    /// 1 to this many characters; needs a GS in the raw form unless last.
    Variable(usize),
}

/// Which [`crate::ElementString`] field an AI fills, which also fixes how its data is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Gtin,
    Lot,
    Expiry,
    ProductionDate,
    Serial,
    Count,
    TradeItemCount,
    Other,
}

#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) ai: &'static str,
    pub(crate) length: Length,
    pub(crate) target: Target,
}

const fn spec(ai: &'static str, length: Length, target: Target) -> Spec {
    Spec { ai, length, target }
}

use Length::{Fixed, Variable};

static SPECS: &[Spec] = &[
    spec("01", Fixed(14), Target::Gtin),
    spec("10", Variable(20), Target::Lot),
    spec("11", Fixed(6), Target::ProductionDate),
    spec("17", Fixed(6), Target::Expiry),
    spec("21", Variable(20), Target::Serial),
    spec("30", Variable(8), Target::Count),
    spec("37", Variable(8), Target::TradeItemCount),
    // Additional product identification, customer part number, secondary serial number.
    spec("240", Variable(30), Target::Other),
    spec("241", Variable(30), Target::Other),
    spec("250", Variable(30), Target::Other),
    // National healthcare reimbursement numbers (DE, FR, ES, BR, PT, US).
    spec("710", Variable(20), Target::Other),
    spec("711", Variable(20), Target::Other),
    spec("712", Variable(20), Target::Other),
    spec("713", Variable(20), Target::Other),
    spec("714", Variable(20), Target::Other),
    spec("715", Variable(20), Target::Other),
];

pub(crate) fn lookup(ai: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.ai == ai)
}

/// Number of digits of the AI starting with these two digits.
///
/// In GS1 the first two digits of an AI fix its length, which is what lets a raw element string
/// be split without separators between AI and data. Knowing the full length also makes an
/// `UnknownAi` error name the whole AI (e.g. 422, not 42). Unassigned prefixes default to 2.
pub(crate) fn ai_length(first_two: &str) -> usize {
    match first_two {
        "23" | "24" | "25" | "40" | "41" | "42" | "71" => 3,
        "31" | "32" | "33" | "34" | "35" | "36" | "39" | "43" | "70" | "72" | "80" | "81" | "82" => 4,
        _ => 2,
    }
}

/// GS1 AI encodable character set 82: printable ASCII except space and `# $ @ [ \ ] ^ { | } ~` and the backquote.
pub(crate) fn is_cset82(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '!' | '"'
                | '%'
                | '&'
                | '\''
                | '('
                | ')'
                | '*'
                | '+'
                | ','
                | '-'
                | '.'
                | '/'
                | ':'
                | ';'
                | '<'
                | '='
                | '>'
                | '?'
                | '_'
        )
}
