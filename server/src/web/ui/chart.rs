//! The temperature chart, drawn on the server as SVG: a min–max band per interval, the mean, the
//! unit's safe limits as labelled dashed lines and alarm periods hatched. No script and no
//! library: a 30-day chart is a few kilobytes whatever the length of the history, because the
//! readings arrive already downsampled.

use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};

use super::esc;
use crate::domain::telemetry::ReadingBucket;

const W: f64 = 800.0;
const H: f64 = 260.0;
const LEFT: f64 = 46.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 28.0;

/// A shaded period: start, end, and its label (the alarm kind).
#[derive(Debug, Clone)]
pub(crate) struct Period {
    /// Start.
    pub start: DateTime<Utc>,
    /// End (or the chart's end while it lasts).
    pub end: DateTime<Utc>,
    /// What it was.
    pub label: String,
}

/// What one chart shows.
#[derive(Debug, Clone)]
pub(crate) struct Chart<'a> {
    /// An id unique in the page (for the title reference).
    pub id: &'a str,
    /// The accessible title.
    pub title: &'a str,
    /// The accessible description.
    pub description: &'a str,
    /// The time span.
    pub start: DateTime<Utc>,
    /// The end of the span.
    pub end: DateTime<Utc>,
    /// Bucket width.
    pub bucket: Duration,
    /// The buckets, ascending.
    pub buckets: &'a [ReadingBucket],
    /// The safe range (low, high) in °C.
    pub limits: (f64, f64),
    /// Alarm periods.
    pub alarms: &'a [Period],
}

fn nice_step(span: f64) -> f64 {
    for s in [1.0, 2.0, 5.0, 10.0, 20.0, 50.0] {
        if span / s <= 8.0 {
            return s;
        }
    }
    100.0
}

/// Renders the chart as an inline `<svg>` element.
pub(crate) fn svg(c: &Chart<'_>) -> String {
    let (low, high) = c.limits;
    let mut ymin = low - 2.0;
    let mut ymax = high + 2.0;
    for b in c.buckets {
        if b.min_temp_c.is_finite() {
            ymin = ymin.min(b.min_temp_c - 1.0);
        }
        if b.max_temp_c.is_finite() {
            ymax = ymax.max(b.max_temp_c + 1.0);
        }
    }
    let span_ms = (c.end - c.start).num_milliseconds().max(1) as f64;
    let x = |t: DateTime<Utc>| {
        LEFT + (W - LEFT - RIGHT) * ((t - c.start).num_milliseconds() as f64 / span_ms).clamp(0.0, 1.0)
    };
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (v - ymin) / (ymax - ymin));

    let mut s = String::with_capacity(8 * 1024);
    let _ = write!(
        s,
        r##"<svg viewBox="0 0 {W} {H}" role="img" aria-labelledby="{id}-t {id}-d" xmlns="http://www.w3.org/2000/svg" font-size="11" font-family="sans-serif"><title id="{id}-t">{title}</title><desc id="{id}-d">{desc}</desc><defs><pattern id="{id}-hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#fde2e4"/><line x1="0" y1="0" x2="0" y2="6" stroke="#c62828" stroke-width="2"/></pattern></defs><rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fff" stroke="#8a94a0"/>"##,
        id = esc(c.id),
        title = esc(c.title),
        desc = esc(c.description),
        pw = W - LEFT - RIGHT,
        ph = H - TOP - BOTTOM,
    );
    // Alarm periods first, under the data.
    for (i, p) in c.alarms.iter().enumerate() {
        let (x0, x1) = (x(p.start.max(c.start)), x(p.end.min(c.end)));
        let _ = write!(
            s,
            r##"<rect x="{x0:.1}" y="{TOP}" width="{w:.1}" height="{ph}" fill="url(#{id}-hatch)" opacity="0.7"><title>{label}</title></rect><text x="{tx:.1}" y="{ty}" fill="#8a0019">{label}</text>"##,
            w = (x1 - x0).max(1.5),
            ph = H - TOP - BOTTOM,
            id = esc(c.id),
            label = esc(&p.label),
            tx = x0 + 2.0,
            // Overlapping periods (an excursion inside a heat alarm) stack their labels.
            ty = TOP + 11.0 + 12.0 * (i % 4) as f64,
        );
    }
    // Horizontal grid and the temperature axis.
    let step = nice_step(ymax - ymin);
    let mut v = (ymin / step).ceil() * step;
    while v <= ymax {
        let yy = y(v);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{x2}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e3e6ea"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{v}</text>"##,
            x2 = W - RIGHT,
            tx = LEFT - 4.0,
            ty = yy + 4.0,
        );
        v += step;
    }
    let _ = write!(s, r#"<text x="4" y="{}" >°C</text>"#, TOP + 4.0);
    // Time axis: ticks on round hours or days.
    let span = c.end - c.start;
    let (tick, fmt) = if span <= Duration::hours(36) {
        (Duration::hours(3), "%H:%M")
    } else if span <= Duration::days(10) {
        (Duration::days(1), "%d %b")
    } else {
        (Duration::days(5), "%d %b")
    };
    let tick_s = tick.num_seconds().max(1);
    let mut t = DateTime::from_timestamp((c.start.timestamp() / tick_s + 1) * tick_s, 0).unwrap_or(c.start);
    while t < c.end {
        let xx = x(t);
        let _ = write!(
            s,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{TOP}" y2="{yb}" stroke="#eef0f2"/><text x="{xx:.1}" y="{ty}" text-anchor="middle">{label}</text>"##,
            yb = H - BOTTOM,
            ty = H - BOTTOM + 16.0,
            label = t.format(fmt),
        );
        t += tick;
    }
    // The band and the mean, one path per run of buckets without a gap.
    let gap = c.bucket + c.bucket / 2;
    let mut runs: Vec<&[ReadingBucket]> = Vec::new();
    let mut from = 0;
    for i in 1..=c.buckets.len() {
        let split = i == c.buckets.len() || c.buckets[i].start - c.buckets[i - 1].start > gap;
        if split {
            runs.push(&c.buckets[from..i]);
            from = i;
        }
    }
    let half = c.bucket / 2;
    for run in runs.into_iter().filter(|r| !r.is_empty()) {
        let mut band = String::new();
        for b in run {
            let _ = write!(band, "{:.1},{:.1} ", x(b.start + half), y(b.max_temp_c));
        }
        for b in run.iter().rev() {
            let _ = write!(band, "{:.1},{:.1} ", x(b.start + half), y(b.min_temp_c));
        }
        let mean: String = run.iter().map(|b| format!("{:.1},{:.1} ", x(b.start + half), y(b.mean_temp_c))).collect();
        if run.len() == 1 {
            let b = &run[0];
            let xx = x(b.start + half);
            let _ = write!(
                s,
                r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{:.1}" y2="{:.1}" stroke="#0a4fa3" stroke-width="3"/>"##,
                y(b.max_temp_c),
                y(b.min_temp_c)
            );
        } else {
            let _ = write!(
                s,
                r##"<polygon points="{band}" fill="#9cc3ee" stroke="none"/><polyline points="{mean}" fill="none" stroke="#0a4fa3" stroke-width="1.5"/>"##
            );
        }
    }
    // The limits on top, labelled, so they read without colour.
    for (v, label) in [(high, format!("{high:+} °C")), (low, format!("{low:+} °C"))] {
        let yy = y(v);
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{x2}" y1="{yy:.1}" y2="{yy:.1}" stroke="#b00020" stroke-width="1.5" stroke-dasharray="6 4"/><text x="{tx}" y="{ty:.1}" text-anchor="end" fill="#8a0019">{label}</text>"##,
            x2 = W - RIGHT,
            tx = W - RIGHT - 4.0,
            ty = yy - 3.0,
            label = esc(&label),
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(t: DateTime<Utc>, min: f64, max: f64) -> ReadingBucket {
        ReadingBucket { start: t, min_temp_c: min, mean_temp_c: (min + max) / 2.0, max_temp_c: max, count: 4 }
    }

    #[test]
    fn draws_band_limits_and_alarms_and_breaks_on_gaps() {
        let start = DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default();
        let b = Duration::minutes(15);
        let mut buckets: Vec<ReadingBucket> = (0..8).map(|i| bucket(start + b * i, 4.0, 5.0)).collect();
        // A gap of two hours, then more data: two runs, so two bands.
        buckets.extend((16..20).map(|i| bucket(start + b * i, 9.0, 11.0)));
        let alarms = vec![Period { start: start + b * 16, end: start + b * 20, label: "Heat alarm <unit>".into() }];
        let out = svg(&Chart {
            id: "u1",
            title: "Fridge",
            description: "desc",
            start,
            end: start + Duration::hours(24),
            bucket: b,
            buckets: &buckets,
            limits: (2.0, 8.0),
            alarms: &alarms,
        });
        assert!(out.starts_with("<svg") && out.ends_with("</svg>"));
        assert_eq!(out.matches("<polygon").count(), 2, "a gap splits the band");
        assert!(out.contains("+8 °C") && out.contains("+2 °C"));
        assert!(out.contains("Heat alarm &lt;unit&gt;"), "labels are escaped");
        assert!(out.len() < 20_000);
    }

    #[test]
    fn an_empty_chart_still_shows_its_limits() {
        let start = DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default();
        let out = svg(&Chart {
            id: "u",
            title: "t",
            description: "d",
            start,
            end: start + Duration::days(30),
            bucket: Duration::hours(6),
            buckets: &[],
            limits: (-25.0, -15.0),
            alarms: &[],
        });
        assert!(out.contains("-15 °C") && out.contains("-25 °C"));
        assert!(!out.contains("<polygon"));
    }
}
