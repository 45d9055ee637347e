//! Progress of long imports and exports: a bar with counts and rate on a terminal, plain lines
//! (at most one every two seconds per stage) when stderr is a file or a pipe, as in CI logs.

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Receives progress of a long operation, stage by stage.
pub trait Progress: Send + Sync {
    /// A stage begins with `total` items.
    fn start(&self, stage: &str, total: u64);
    /// `n` more items of the current stage are done.
    fn advance(&self, n: u64);
    /// The current stage is over.
    fn finish(&self);
}

/// Ignores progress (tests, library callers).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _stage: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}

#[derive(Debug)]
struct Stage {
    name: String,
    total: u64,
    done: u64,
    started: Instant,
    printed: Instant,
    bar: Option<ProgressBar>,
}

/// Progress on stderr: an indicatif bar on a terminal, plain lines otherwise.
#[derive(Debug)]
pub struct ConsoleProgress {
    label: String,
    terminal: bool,
    stage: Mutex<Option<Stage>>,
}

/// How often plain progress lines may appear per stage.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

impl ConsoleProgress {
    /// Progress lines prefixed with `label` (for example `import`); a bar only when stderr is a terminal.
    pub fn new(label: &str) -> Self {
        ConsoleProgress { label: label.to_owned(), terminal: std::io::stderr().is_terminal(), stage: Mutex::new(None) }
    }

    /// Always plain lines, whatever stderr is.
    pub fn plain(label: &str) -> Self {
        ConsoleProgress { label: label.to_owned(), terminal: false, stage: Mutex::new(None) }
    }

    fn rate(done: u64, elapsed: Duration) -> u64 {
        let secs = elapsed.as_secs_f64();
        if secs > 0.0 {
            // Display only: rounding a rate to whole rows per second is exact enough.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
            let r = (done as f64 / secs).round() as u64;
            r
        } else {
            done
        }
    }
}

impl Progress for ConsoleProgress {
    fn start(&self, stage: &str, total: u64) {
        self.finish();
        let now = Instant::now();
        let bar = self.terminal.then(|| {
            let style =
                ProgressStyle::with_template("{prefix} {msg:<17} [{bar:30}] {pos:>7}/{len:7} {rate:>14} eta {eta}")
                    .map(|s| {
                        s.progress_chars("=> ").with_key(
                            "rate",
                            |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                                let _ = write!(w, "{:.0} rows/s", st.per_sec());
                            },
                        )
                    })
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                .with_style(style)
                .with_prefix(self.label.clone())
                .with_message(stage.to_owned())
        });
        let mut s = self.stage.lock().unwrap_or_else(|p| p.into_inner());
        *s = Some(Stage { name: stage.to_owned(), total, done: 0, started: now, printed: now, bar });
    }

    fn advance(&self, n: u64) {
        let mut guard = self.stage.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = guard.as_mut() else { return };
        s.done += n;
        match &s.bar {
            Some(bar) => bar.inc(n),
            None if s.printed.elapsed() >= PLAIN_EVERY => {
                s.printed = Instant::now();
                let rate = Self::rate(s.done, s.started.elapsed());
                eprintln!("{}: {}: {}/{} ({rate} rows/s)", self.label, s.name, s.done, s.total);
            }
            None => {}
        }
    }

    fn finish(&self) {
        let mut guard = self.stage.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = guard.take() else { return };
        if let Some(bar) = &s.bar {
            bar.finish_and_clear();
        }
        // An empty stage (no tokens in this import, say) is not worth a line.
        if s.total == 0 && s.done == 0 {
            return;
        }
        let elapsed = s.started.elapsed();
        let rate = Self::rate(s.done, elapsed);
        eprintln!(
            "{}: {}: {}/{} in {:.2} s ({rate} rows/s)",
            self.label,
            s.name,
            s.done,
            s.total,
            elapsed.as_secs_f64()
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_rows_per_second() {
        assert_eq!(ConsoleProgress::rate(500, Duration::from_millis(250)), 2000);
        assert_eq!(ConsoleProgress::rate(7, Duration::ZERO), 7);
        let p = ConsoleProgress::plain("test");
        p.start("rows", 10);
        p.advance(10);
        p.finish();
        p.finish();
    }
}
