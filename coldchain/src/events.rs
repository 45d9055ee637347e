//! Alarm events and the fixed-capacity collection `evaluate` returns.

use core::ops::Deref;

use crate::profile::MAX_RULES;

/// What an alarm is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlarmKind {
    /// Temperature outside the profile's acceptable range (warning only).
    Excursion,
    /// Too warm for too long.
    Heat,
    /// Too cold for too long (freezing for 2–8 °C vaccines).
    Freeze,
    /// No reading for longer than the profile's no-data limit.
    NoData,
    /// Mains power reported off for longer than the profile's limit.
    PowerOut,
    /// The sensor reported a fault or a sentinel value.
    SensorFault,
}

/// How an alarm changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transition {
    /// The alarm condition was met.
    Opened,
    /// An open alarm reached a higher severity.
    Escalated,
    /// The condition ended (or its run was broken by a data gap).
    Closed,
}

/// How urgent an alarm is; ordered `Warning < Alarm < Critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Worth looking at; the product is not yet at risk.
    Warning,
    /// Action needed; potency may be affected.
    Alarm,
    /// Product likely damaged; quarantine and assess.
    Critical,
}

/// One alarm transition with the statistics of the run behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AlarmEvent {
    /// Which alarm.
    pub kind: AlarmKind,
    /// Opened, escalated or closed.
    pub transition: Transition,
    /// Severity after the transition (for `Closed`: the highest severity reached).
    pub severity: Severity,
    /// Index into `Profile::rules` for rule-based alarms; `None` for the built-in ones.
    pub rule: Option<u8>,
    /// Time of the first reading of the run (NoData: the last reading before the silence).
    pub start_ms: i64,
    /// Time of the reading that caused the transition (NoData `Opened`: last reading + limit).
    pub at_ms: i64,
    /// Lowest valid temperature of the run in centi-°C, if the run had any.
    pub min_centi: Option<i32>,
    /// Highest valid temperature of the run in centi-°C, if the run had any.
    pub max_centi: Option<i32>,
    /// Time past the threshold in ms (continuous: last run reading − first; cumulative: window total).
    pub past_ms: i64,
    /// `past_ms` in whole minutes, rounded down.
    pub minutes_past_threshold: i64,
    /// Trapezoid integral of the distance past the threshold, in hundredths of °C·h, rounded down.
    pub centi_degree_hours: i64,
}

impl AlarmEvent {
    /// Degree-hours past the threshold as a float, for display.
    pub fn degree_hours(&self) -> f64 {
        self.centi_degree_hours as f64 / f64::from(crate::CENTI_PER_DEGREE)
    }
}

/// Most events one reading can cause: NoData, SensorFault, PowerOut, Excursion 2 each, 3 per rule.
pub const MAX_EVENTS: usize = 8 + 3 * MAX_RULES;

const PLACEHOLDER: AlarmEvent = AlarmEvent {
    kind: AlarmKind::NoData,
    transition: Transition::Closed,
    severity: Severity::Warning,
    rule: None,
    start_ms: 0,
    at_ms: 0,
    min_centi: None,
    max_centi: None,
    past_ms: 0,
    minutes_past_threshold: 0,
    centi_degree_hours: 0,
};

/// The events caused by one reading, in a fixed-size buffer; derefs to `[AlarmEvent]`.
#[derive(Clone, Copy, Debug)]
pub struct Events {
    buf: [AlarmEvent; MAX_EVENTS],
    len: usize,
}

impl Events {
    /// An empty collection.
    pub const fn new() -> Self {
        Self { buf: [PLACEHOLDER; MAX_EVENTS], len: 0 }
    }

    /// The events as a slice, in emission order.
    pub fn as_slice(&self) -> &[AlarmEvent] {
        self.buf.get(..self.len).unwrap_or(&[])
    }

    pub(crate) fn push(&mut self, event: AlarmEvent) {
        // MAX_EVENTS bounds what one reading can emit (tested), so this never drops in practice;
        // dropping beats panicking in firmware if a future rule breaks the bound.
        debug_assert!(self.len < MAX_EVENTS, "Events capacity exceeded");
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = event;
            self.len += 1;
        }
    }
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for Events {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Events {}

impl Deref for Events {
    type Target = [AlarmEvent];
    fn deref(&self) -> &[AlarmEvent] {
        self.as_slice()
    }
}

impl<'a> IntoIterator for &'a Events {
    type Item = &'a AlarmEvent;
    type IntoIter = core::slice::Iter<'a, AlarmEvent>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl IntoIterator for Events {
    type Item = AlarmEvent;
    type IntoIter = EventsIntoIter;
    fn into_iter(self) -> EventsIntoIter {
        EventsIntoIter { events: self, next: 0 }
    }
}

/// Owning iterator over [`Events`].
#[derive(Clone, Debug)]
pub struct EventsIntoIter {
    events: Events,
    next: usize,
}

impl Iterator for EventsIntoIter {
    type Item = AlarmEvent;
    fn next(&mut self) -> Option<AlarmEvent> {
        let event = self.events.as_slice().get(self.next).copied()?;
        self.next += 1;
        Some(event)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.events.len.saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for EventsIntoIter {}
