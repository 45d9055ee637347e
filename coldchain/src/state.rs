//! Evaluation state and its stable byte encoding.

use core::fmt;

use crate::events::{AlarmKind, Severity};
use crate::profile::{MAX_RULES, Profile};

/// Buckets in a cumulative rule's sliding window.
pub(crate) const BUCKETS: usize = 16;

/// Version byte written first by [`State::to_bytes`].
pub const STATE_VERSION: u8 = 1;

const RUN_BYTES: usize = 1 + 8 + 8 + 8 + 4 + 4 + 8;
const WINDOW_BYTES: usize = 8 + 4 * BUCKETS;
const HEADER_BYTES: usize = 1 + 1 + 3 * 8;

/// Length of the encoded state in bytes.
pub const STATE_BYTES: usize = HEADER_BYTES + 3 * RUN_BYTES + MAX_RULES * (RUN_BYTES + WINDOW_BYTES);

/// One run (continuous rules) or episode (cumulative rules) of readings past a condition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) active: bool,
    pub(crate) open: Option<Severity>,
    pub(crate) has_temp: bool,
    pub(crate) start_ms: i64,
    pub(crate) last_ms: i64,
    pub(crate) last_excess: i64,
    pub(crate) min_centi: i32,
    pub(crate) max_centi: i32,
    pub(crate) degree_centi_ms: i64,
}

impl Run {
    pub(crate) fn begin(now: i64) -> Self {
        Self { active: true, start_ms: now, last_ms: now, ..Self::default() }
    }

    pub(crate) fn note_temp(&mut self, centi_c: i32) {
        if self.has_temp {
            self.min_centi = self.min_centi.min(centi_c);
            self.max_centi = self.max_centi.max(centi_c);
        } else {
            self.has_temp = true;
            self.min_centi = centi_c;
            self.max_centi = centi_c;
        }
    }

    /// Adds the trapezoid between the previous past reading and this one.
    pub(crate) fn extend(&mut self, now: i64, excess: i64) {
        let dt = now.saturating_sub(self.last_ms).max(0);
        let area = self.last_excess.saturating_add(excess).saturating_mul(dt) / 2;
        self.degree_centi_ms = self.degree_centi_ms.saturating_add(area);
        self.last_ms = now;
        self.last_excess = excess;
    }

    pub(crate) fn duration_ms(&self) -> i64 {
        self.last_ms.saturating_sub(self.start_ms).max(0)
    }
}

/// Sliding-window accumulator: ms past the threshold per bucket, newest bucket index `head`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) head: i64,
    pub(crate) buckets: [u32; BUCKETS],
}

impl Window {
    /// Bucket width such that 15 whole buckets span the window, so 16 always cover it.
    pub(crate) fn bucket_ms(window_ms: i64) -> i64 {
        let w = window_ms.max(1);
        let span = BUCKETS as i64 - 1;
        w / span + i64::from(w % span != 0)
    }

    pub(crate) fn total(&self) -> u64 {
        self.buckets.iter().map(|&b| u64::from(b)).sum()
    }

    fn slot(idx: i64) -> usize {
        // rem_euclid keeps the slot in 0..BUCKETS for negative times too.
        idx.rem_euclid(BUCKETS as i64) as usize
    }

    /// Moves the head to the bucket of `now`, forgetting buckets that slid out.
    pub(crate) fn advance(&mut self, now: i64, bucket_ms: i64) {
        let idx = now.div_euclid(bucket_ms);
        if self.total() == 0 {
            self.head = idx;
            return;
        }
        if idx > self.head {
            let steps = idx.saturating_sub(self.head).min(BUCKETS as i64);
            for k in 1..=steps {
                self.buckets[Self::slot(self.head.wrapping_add(k))] = 0;
            }
            self.head = idx;
        }
    }

    /// Adds the part of `[from, to]` that falls in the 16 buckets ending at `to`.
    pub(crate) fn add(&mut self, from: i64, to: i64, bucket_ms: i64) {
        let to_idx = to.div_euclid(bucket_ms);
        let mut idx = from.div_euclid(bucket_ms).max(to_idx.saturating_sub(BUCKETS as i64 - 1));
        while idx <= to_idx {
            let lo = from.max(idx.saturating_mul(bucket_ms));
            let hi = to.min(idx.saturating_add(1).saturating_mul(bucket_ms));
            if hi > lo {
                let ms = u32::try_from(hi.saturating_sub(lo)).unwrap_or(u32::MAX);
                let slot = &mut self.buckets[Self::slot(idx)];
                *slot = slot.saturating_add(ms);
            }
            if idx == i64::MAX {
                break;
            }
            idx += 1;
        }
    }
}

/// Per-rule state: the current run/episode and, for cumulative rules, the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RuleState {
    pub(crate) run: Run,
    pub(crate) window: Window,
}

/// Everything `evaluate` remembers between readings; Copy, fixed size, encodable with `to_bytes`.
///
/// A state belongs to one profile: after changing a unit's profile, start from `State::new()`
/// (or replay its history) because rule slots are matched by index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub(crate) last_ms: Option<i64>,
    pub(crate) last_temp_ms: Option<i64>,
    pub(crate) last_power_ms: Option<i64>,
    pub(crate) no_data_open: bool,
    pub(crate) fault: Run,
    pub(crate) power: Run,
    pub(crate) excursion: Run,
    pub(crate) rules: [RuleState; MAX_RULES],
}

/// Why `State::from_bytes` rejected its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input is not exactly `STATE_BYTES` long.
    Length {
        /// Required length.
        expected: usize,
        /// Given length.
        actual: usize,
    },
    /// The version byte is not `STATE_VERSION`.
    Version(u8),
    /// A flag byte has bits this version never writes.
    Corrupt {
        /// Offset of the offending byte.
        offset: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length { expected, actual } => {
                write!(f, "state must be {expected} bytes, got {actual}")
            }
            Self::Version(v) => write!(f, "unsupported state version {v}"),
            Self::Corrupt { offset } => write!(f, "invalid flags at byte {offset}"),
        }
    }
}

impl core::error::Error for DecodeError {}

impl State {
    /// The state before any reading.
    pub const fn new() -> Self {
        const RUN: Run = Run {
            active: false,
            open: None,
            has_temp: false,
            start_ms: 0,
            last_ms: 0,
            last_excess: 0,
            min_centi: 0,
            max_centi: 0,
            degree_centi_ms: 0,
        };
        const RULE: RuleState = RuleState { run: RUN, window: Window { head: 0, buckets: [0; BUCKETS] } };
        Self {
            last_ms: None,
            last_temp_ms: None,
            last_power_ms: None,
            no_data_open: false,
            fault: RUN,
            power: RUN,
            excursion: RUN,
            rules: [RULE; MAX_RULES],
        }
    }

    /// Time of the last evaluated reading, if any.
    pub const fn last_reading_ms(&self) -> Option<i64> {
        self.last_ms
    }

    /// Whether an alarm of `kind` is currently open (`profile` maps rule slots to kinds).
    pub fn is_open(&self, profile: &Profile, kind: AlarmKind) -> bool {
        match kind {
            AlarmKind::Excursion => self.excursion.open.is_some(),
            AlarmKind::NoData if self.no_data_open => true,
            AlarmKind::PowerOut if self.power.open.is_some() => true,
            AlarmKind::SensorFault if self.fault.open.is_some() => true,
            _ => profile
                .rules
                .iter()
                .zip(self.rules.iter())
                .any(|(rule, st)| rule.is_some_and(|r| r.kind == kind) && st.run.open.is_some()),
        }
    }

    /// Highest severity among open alarms, if any (e.g. for a local buzzer/LED).
    pub fn highest_open_severity(&self) -> Option<Severity> {
        let no_data = self.no_data_open.then_some(Severity::Alarm);
        [self.fault.open, self.power.open, self.excursion.open, no_data]
            .into_iter()
            .chain(self.rules.iter().map(|r| r.run.open))
            .flatten()
            .max()
    }

    /// Encodes the state; see the crate docs for the layout.
    pub fn to_bytes(&self) -> [u8; STATE_BYTES] {
        let mut w = Writer { buf: [0; STATE_BYTES], pos: 0 };
        w.u8(STATE_VERSION);
        let flags = u8::from(self.last_ms.is_some())
            | u8::from(self.last_temp_ms.is_some()) << 1
            | u8::from(self.last_power_ms.is_some()) << 2
            | u8::from(self.no_data_open) << 3;
        w.u8(flags);
        w.i64(self.last_ms.unwrap_or(0));
        w.i64(self.last_temp_ms.unwrap_or(0));
        w.i64(self.last_power_ms.unwrap_or(0));
        w.run(&self.fault);
        w.run(&self.power);
        w.run(&self.excursion);
        for r in &self.rules {
            w.run(&r.run);
            w.i64(r.window.head);
            for b in r.window.buckets {
                w.bytes(&b.to_le_bytes());
            }
        }
        debug_assert_eq!(w.pos, STATE_BYTES);
        w.buf
    }

    /// Decodes bytes written by `to_bytes`; rejects wrong length, version or flag bits.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != STATE_BYTES {
            return Err(DecodeError::Length { expected: STATE_BYTES, actual: bytes.len() });
        }
        let mut r = Reader { buf: bytes, pos: 0 };
        let version = r.u8();
        if version != STATE_VERSION {
            return Err(DecodeError::Version(version));
        }
        let flags_at = r.pos;
        let flags = r.u8();
        if flags & !0b1111 != 0 {
            return Err(DecodeError::Corrupt { offset: flags_at });
        }
        let opt = |bit: u8, v: i64| (flags & (1 << bit) != 0).then_some(v);
        let last_ms = opt(0, r.i64());
        let last_temp_ms = opt(1, r.i64());
        let last_power_ms = opt(2, r.i64());
        let no_data_open = flags & (1 << 3) != 0;
        let fault = r.run()?;
        let power = r.run()?;
        let excursion = r.run()?;
        let mut rules = [RuleState::default(); MAX_RULES];
        for slot in &mut rules {
            slot.run = r.run()?;
            slot.window.head = r.i64();
            for b in &mut slot.window.buckets {
                *b = r.u32();
            }
        }
        Ok(Self { last_ms, last_temp_ms, last_power_ms, no_data_open, fault, power, excursion, rules })
    }
}

struct Writer {
    buf: [u8; STATE_BYTES],
    pos: usize,
}

impl Writer {
    fn bytes(&mut self, b: &[u8]) {
        let end = self.pos + b.len();
        if let Some(dst) = self.buf.get_mut(self.pos..end) {
            dst.copy_from_slice(b);
        }
        self.pos = end;
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }
    fn run(&mut self, run: &Run) {
        let sev = match run.open {
            None => 0,
            Some(Severity::Warning) => 1,
            Some(Severity::Alarm) => 2,
            Some(Severity::Critical) => 3,
        };
        self.u8(u8::from(run.active) | u8::from(run.has_temp) << 1 | sev << 2);
        self.i64(run.start_ms);
        self.i64(run.last_ms);
        self.i64(run.last_excess);
        self.bytes(&run.min_centi.to_le_bytes());
        self.bytes(&run.max_centi.to_le_bytes());
        self.i64(run.degree_centi_ms);
    }
}

/// Reads fixed-width fields; the length is checked up front, so short reads yield zeros, never panics.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        if let Some(src) = self.buf.get(self.pos..self.pos + N) {
            out.copy_from_slice(src);
        }
        self.pos += N;
        out
    }
    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.array())
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.array())
    }
    fn run(&mut self) -> Result<Run, DecodeError> {
        let offset = self.pos;
        let flags = self.u8();
        if flags & !0b1111 != 0 {
            return Err(DecodeError::Corrupt { offset });
        }
        let open = match flags >> 2 {
            0 => None,
            1 => Some(Severity::Warning),
            2 => Some(Severity::Alarm),
            _ => Some(Severity::Critical),
        };
        Ok(Run {
            active: flags & 1 != 0,
            has_temp: flags & 2 != 0,
            open,
            start_ms: self.i64(),
            last_ms: self.i64(),
            last_excess: self.i64(),
            min_centi: self.i32(),
            max_centi: self.i32(),
            degree_centi_ms: self.i64(),
        })
    }
}
