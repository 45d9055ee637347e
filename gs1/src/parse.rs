//! The two front ends (raw, bracketed) and the shared per-AI validation.

use crate::ai::{self, Length, Spec, Target};
use crate::{Date, ElementString, Error};

/// Group Separator, how scanners transmit FNC1 used as a field terminator.
const GS: char = '\u{1d}';

/// Parses a GS1 element string in raw (GS-separated) or bracketed form; never panics.
///
/// Years are `2000 + YY` (2000–2099); see the crate docs for everything that is tolerated.
pub fn parse(input: &str) -> Result<ElementString, Error> {
    let (offset, body) = strip_envelope(input)?;
    // Position-tagged characters keep error offsets exact even after `\(` unescaping.
    let chars: Vec<(usize, char)> = body.char_indices().map(|(i, c)| (i.saturating_add(offset), c)).collect();
    let mut cursor = Cursor { chars, next: 0 };
    let mut out = ElementString::default();
    match cursor.peek() {
        None => return Err(Error::Empty),
        Some((_, '(')) => bracketed(&mut cursor, &mut out)?,
        Some(_) => raw(&mut cursor, &mut out)?,
    }
    Ok(out)
}

/// [`parse`] for bytes straight from a scanner; non-UTF-8 input is an error, not a panic.
pub fn parse_bytes(input: &[u8]) -> Result<ElementString, Error> {
    match std::str::from_utf8(input) {
        Ok(s) => parse(s),
        Err(e) => Err(Error::InvalidUtf8 { position: e.valid_up_to() }),
    }
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Strips what scanners wrap around the data: blanks (Enter suffix), the symbology identifier
/// and an FNC1 in first position. Returns the rest and its byte offset in `input`.
fn strip_envelope(input: &str) -> Result<(usize, &str), Error> {
    let trimmed_end = input.trim_end_matches(is_blank);
    let mut rest = trimmed_end.trim_start_matches(is_blank);
    if let Some(after) = rest.strip_prefix(']') {
        let mut it = after.chars();
        match (it.next(), it.next()) {
            (Some(letter), Some(digit)) if letter.is_ascii_alphabetic() && digit.is_ascii_digit() => {
                rest = it.as_str();
            }
            _ => return Err(Error::BadSymbologyIdentifier { found: rest.chars().take(3).collect() }),
        }
    }
    if let Some(after) = rest.strip_prefix(GS) {
        rest = after;
    }
    // `rest` is a suffix of `trimmed_end`, which starts where `input` does.
    Ok((trimmed_end.len().saturating_sub(rest.len()), rest))
}

struct Cursor {
    chars: Vec<(usize, char)>,
    next: usize,
}

impl Cursor {
    fn peek(&self) -> Option<(usize, char)> {
        self.chars.get(self.next).copied()
    }

    fn peek_second(&self) -> Option<(usize, char)> {
        self.chars.get(self.next.saturating_add(1)).copied()
    }

    fn bump(&mut self) {
        self.next = self.next.saturating_add(1);
    }

    fn next_if(&mut self, want: char) -> bool {
        let hit = matches!(self.peek(), Some((_, c)) if c == want);
        if hit {
            self.bump();
        }
        hit
    }

    fn skip_spaces(&mut self) {
        while self.next_if(' ') {}
    }
}

fn raw(cursor: &mut Cursor, out: &mut ElementString) -> Result<(), Error> {
    while let Some((ai_pos, _)) = cursor.peek() {
        let spec = raw_ai(cursor, ai_pos)?;
        let mut value = Vec::new();
        match spec.length {
            Length::Fixed(n) => {
                while value.len() < n {
                    match cursor.peek() {
                        Some(pc) if pc.1 != GS => {
                            value.push(pc);
                            cursor.bump();
                        }
                        _ => break,
                    }
                }
                check_not_empty(spec, &value)?;
                if value.len() != n {
                    return Err(Error::BadLength { ai: spec.ai.into(), expected: n, found: value.len() });
                }
            }
            Length::Variable(max) => {
                while let Some(pc) = cursor.peek().filter(|pc| pc.1 != GS) {
                    value.push(pc);
                    cursor.bump();
                }
                check_not_empty(spec, &value)?;
                // Without its GS the next elements become part of this field; overrunning the
                // maximum is the only symptom we can see, so name the likely cause.
                if value.len() > max {
                    return Err(Error::MissingSeparator { ai: spec.ai.into(), max });
                }
            }
        }
        // Terminator of a variable field; after a fixed field it is redundant but harmless.
        cursor.next_if(GS);
        apply(out, spec, &value)?;
    }
    Ok(())
}

/// Reads an AI in the raw form, where only its first two digits tell how many digits follow.
fn raw_ai(cursor: &mut Cursor, position: usize) -> Result<&'static Spec, Error> {
    let mut ai = String::new();
    let mut digits = 2;
    while ai.len() < digits {
        match cursor.peek() {
            Some((_, c)) if c.is_ascii_digit() => {
                ai.push(c);
                cursor.bump();
                if ai.len() == 2 {
                    digits = ai::ai_length(&ai);
                }
            }
            Some((_, c)) => {
                ai.push(c);
                return Err(Error::InvalidAi { found: ai, position });
            }
            None => return Err(Error::InvalidAi { found: ai, position }),
        }
    }
    ai::lookup(&ai).ok_or(Error::UnknownAi { ai, position })
}

fn bracketed(cursor: &mut Cursor, out: &mut ElementString) -> Result<(), Error> {
    loop {
        cursor.skip_spaces();
        let Some((open, c)) = cursor.peek() else { return Ok(()) };
        cursor.bump();
        if c != '(' {
            // Data runs up to the next `(`, so only a malformed start gets here.
            return Err(Error::InvalidAi { found: c.into(), position: open });
        }
        let ai_pos = open.saturating_add(1);
        let mut ai = String::new();
        loop {
            match cursor.peek() {
                Some((_, ')')) => break,
                Some((_, '(')) | None => return Err(Error::UnbalancedParenthesis { position: open }),
                Some((_, c)) => ai.push(c),
            }
            cursor.bump();
        }
        cursor.bump();
        if !(2..=4).contains(&ai.len()) || !ai.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::InvalidAi { found: ai, position: ai_pos });
        }
        let spec = ai::lookup(&ai).ok_or(Error::UnknownAi { ai, position: ai_pos })?;

        cursor.skip_spaces();
        let mut value = Vec::new();
        while let Some((pos, c)) = cursor.peek() {
            match c {
                '(' => break,
                // `\` is outside set 82, so `\(` can only be an escaped data parenthesis.
                '\\' if matches!(cursor.peek_second(), Some((_, '('))) => {
                    value.push((pos, '('));
                    cursor.bump();
                }
                _ => value.push((pos, c)),
            }
            cursor.bump();
        }
        // Space is outside set 82 too, so trailing spaces can only be layout between elements.
        while value.last().is_some_and(|pc| pc.1 == ' ') {
            value.pop();
        }
        check_not_empty(spec, &value)?;
        match spec.length {
            Length::Fixed(n) if value.len() != n => {
                return Err(Error::BadLength { ai: spec.ai.into(), expected: n, found: value.len() });
            }
            Length::Variable(max) if value.len() > max => return Err(Error::TooLong { ai: spec.ai.into(), max }),
            _ => {}
        }
        apply(out, spec, &value)?;
    }
}

fn check_not_empty(spec: &Spec, value: &[(usize, char)]) -> Result<(), Error> {
    if value.is_empty() { Err(Error::EmptyValue { ai: spec.ai.into() }) } else { Ok(()) }
}

/// Validates the content of one field (its length is already checked) and stores it.
fn apply(out: &mut ElementString, spec: &Spec, value: &[(usize, char)]) -> Result<(), Error> {
    let text: String = value.iter().map(|pc| pc.1).collect();
    match spec.target {
        Target::Gtin => {
            only(spec, value, |c| c.is_ascii_digit())?;
            if let Some((last, payload)) = value.split_last() {
                let payload: String = payload.iter().map(|pc| pc.1).collect();
                if let Some(expected) = crate::check_digit_for(&payload)
                    && expected != last.1
                {
                    return Err(Error::BadCheckDigit { gtin: text, expected });
                }
            }
            set_once(&mut out.gtin, text, spec)
        }
        Target::Expiry | Target::ProductionDate => {
            only(spec, value, |c| c.is_ascii_digit())?;
            let date =
                Date::from_yymmdd(&text).ok_or_else(|| Error::InvalidDate { ai: spec.ai.into(), value: text })?;
            let slot = if spec.target == Target::Expiry { &mut out.expiry } else { &mut out.production_date };
            set_once(slot, date, spec)
        }
        Target::Count | Target::TradeItemCount => {
            only(spec, value, |c| c.is_ascii_digit())?;
            // The length check keeps this to 8 digits, which always fit; the error arm is a guard.
            let max = match spec.length {
                Length::Fixed(n) | Length::Variable(n) => n,
            };
            let n = text.parse::<u32>().map_err(|_| Error::TooLong { ai: spec.ai.into(), max })?;
            let slot = if spec.target == Target::Count { &mut out.count } else { &mut out.trade_item_count };
            set_once(slot, n, spec)
        }
        Target::Lot | Target::Serial => {
            only(spec, value, ai::is_cset82)?;
            let slot = if spec.target == Target::Lot { &mut out.lot } else { &mut out.serial };
            set_once(slot, text, spec)
        }
        Target::Other => {
            only(spec, value, ai::is_cset82)?;
            match out.other.iter().find(|(ai, _)| ai == spec.ai) {
                None => out.other.push((spec.ai.into(), text)),
                Some((_, seen)) if *seen == text => {}
                Some(_) => return Err(Error::DuplicateAi { ai: spec.ai.into() }),
            }
            Ok(())
        }
    }
}

fn only(spec: &Spec, value: &[(usize, char)], allowed: impl Fn(char) -> bool) -> Result<(), Error> {
    match value.iter().find(|pc| !allowed(pc.1)) {
        Some(&(position, character)) => Err(Error::InvalidCharacter { ai: spec.ai.into(), character, position }),
        None => Ok(()),
    }
}

/// The same AI twice with the same value contradicts nothing, so it is accepted; with a
/// different value the symbol contradicts itself and no field can be trusted.
fn set_once<T: PartialEq>(slot: &mut Option<T>, value: T, spec: &Spec) -> Result<(), Error> {
    match slot {
        Some(seen) if *seen != value => Err(Error::DuplicateAi { ai: spec.ai.into() }),
        Some(_) => Ok(()),
        None => {
            *slot = Some(value);
            Ok(())
        }
    }
}
