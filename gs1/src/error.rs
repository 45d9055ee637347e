//! Why an element string was rejected.

use std::fmt;

/// Why an element string could not be parsed; every message names the AI when there is one.
///
/// Positions are byte offsets into the input as passed to [`crate::parse`] / [`crate::parse_bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Nothing to parse: empty, whitespace, or only a symbology identifier / FNC1.
    Empty,
    /// The bytes are not UTF-8 (GS1 data is ASCII, so this is never a valid element string).
    InvalidUtf8 {
        /// Offset of the first invalid byte.
        position: usize,
    },
    /// Input starts with `]` but not with `]` + letter + digit.
    BadSymbologyIdentifier {
        /// Up to three characters from the `]`.
        found: String,
    },
    /// Something other than a 2–4 digit AI where an AI must start.
    InvalidAi {
        /// What was there instead (possibly empty, when the input ended).
        found: String,
        /// Where the AI should start.
        position: usize,
    },
    /// A well-formed AI that this parser does not support.
    UnknownAi {
        /// The AI digits.
        ai: String,
        /// Where the AI starts.
        position: usize,
    },
    /// Bracketed form: a `(` without its `)`.
    UnbalancedParenthesis {
        /// Where the unmatched `(` is.
        position: usize,
    },
    /// An AI with no data (e.g. immediately followed by GS or by the next `(`).
    EmptyValue {
        /// The AI.
        ai: String,
    },
    /// A fixed-length AI whose data has the wrong length.
    BadLength {
        /// The AI.
        ai: String,
        /// Required number of characters.
        expected: usize,
        /// Number of characters found.
        found: usize,
    },
    /// Bracketed form: a variable-length field longer than its maximum.
    TooLong {
        /// The AI.
        ai: String,
        /// Maximum number of characters.
        max: usize,
    },
    /// Raw form: a variable-length field longer than its maximum, most likely because the GS
    /// after it is missing and the following elements were read as its data.
    MissingSeparator {
        /// The AI.
        ai: String,
        /// Maximum number of characters.
        max: usize,
    },
    /// A character not allowed in this AI (digits only, or GS1 character set 82).
    InvalidCharacter {
        /// The AI.
        ai: String,
        /// The offending character.
        character: char,
        /// Where it is.
        position: usize,
    },
    /// AI (01): the GTIN's last digit is not its GS1 mod-10 check digit.
    BadCheckDigit {
        /// The GTIN as read.
        gtin: String,
        /// The check digit it should have.
        expected: char,
    },
    /// A YYMMDD date with a month or day that does not exist.
    InvalidDate {
        /// The AI.
        ai: String,
        /// The six digits as read.
        value: String,
    },
    /// The same AI twice with different values.
    DuplicateAi {
        /// The AI.
        ai: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Empty => f.write_str("empty element string: no AI found"),
            Error::InvalidUtf8 { position } => {
                write!(f, "not valid UTF-8 at byte {position} (GS1 element strings are ASCII)")
            }
            Error::BadSymbologyIdentifier { found } => {
                write!(f, "malformed symbology identifier {found:?}: expected ']' + letter + digit, e.g. ]d2")
            }
            Error::InvalidAi { found, position } => {
                write!(f, "expected an AI (2–4 digits) at byte {position}, found {found:?}")
            }
            Error::UnknownAi { ai, position } => write!(f, "AI ({ai}) at byte {position} is not supported"),
            Error::UnbalancedParenthesis { position } => write!(
                f,
                "unbalanced parenthesis: '(' at byte {position} has no matching ')' (write a literal '(' in data as \\()"
            ),
            Error::EmptyValue { ai } => write!(f, "AI ({ai}): no data"),
            Error::BadLength { ai, expected, found } => {
                write!(f, "AI ({ai}): must be exactly {expected} characters, found {found}")
            }
            Error::TooLong { ai, max } => write!(f, "AI ({ai}): longer than {max} characters"),
            Error::MissingSeparator { ai, max } => {
                write!(f, "AI ({ai}): longer than {max} characters — is a GS separator missing after it?")
            }
            Error::InvalidCharacter { ai, character, position } => {
                write!(f, "AI ({ai}): character {character:?} at byte {position} is not allowed")
            }
            Error::BadCheckDigit { gtin, expected } => {
                write!(f, "AI (01): wrong check digit in GTIN {gtin}, expected {expected}")
            }
            Error::InvalidDate { ai, value } => write!(f, "AI ({ai}): {value} is not a valid YYMMDD date"),
            Error::DuplicateAi { ai } => write!(f, "AI ({ai}) appears more than once with different values"),
        }
    }
}

impl std::error::Error for Error {}
