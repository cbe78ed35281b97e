//! Log summaries: bad records and delivery failures are logged one by one
//! at DEBUG only; at WARN they are summarised at most once per interval per
//! summary, with a count per reason and one example's coordinates, so a
//! poison flood cannot flood the logs.

use std::time::{Duration, Instant};

/// How often a summary line is written at most.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Counts by reason since the last WARN line, each with its first example.
#[derive(Debug)]
pub struct LogSummary {
    what: &'static str,
    interval: Duration,
    /// When the last line was written (None: none yet, the next event is
    /// written at once).
    last_line: Option<Instant>,
    /// When the first event counted since the last line happened.
    first_event: Option<Instant>,
    /// (reason, count, example coordinates).
    counts: Vec<(&'static str, u64, String)>,
    /// Lines written (tests).
    lines: u64,
}

impl LogSummary {
    /// `what` names the event in the WARN line, e.g. "records sent to the dead-letter topic".
    /// The first event is logged at once; later ones at most once per interval.
    pub fn new(what: &'static str, interval: Duration) -> Self {
        Self {
            what,
            interval,
            last_line: None,
            first_event: None,
            counts: Vec::new(),
            lines: 0,
        }
    }

    /// Counts one event; `example` (topic/partition@offset) is only built
    /// for the first event of a reason in an interval.
    pub fn note(&mut self, reason: &'static str, example: impl FnOnce() -> String) {
        self.first_event.get_or_insert_with(Instant::now);
        match self.counts.iter_mut().find(|(r, _, _)| *r == reason) {
            Some((_, n, _)) => *n += 1,
            None => self.counts.push((reason, 1, example())),
        }
        self.maybe_flush();
    }

    /// Writes the WARN line if the interval has passed and anything was counted.
    pub fn maybe_flush(&mut self) {
        if !self.counts.is_empty() && self.last_line.is_none_or(|t| t.elapsed() >= self.interval) {
            self.flush();
        }
    }

    /// Writes the WARN line now if anything was counted.
    pub fn flush(&mut self) {
        if self.counts.is_empty() {
            return;
        }
        let seconds = self.first_event.take().map_or(0, |t| t.elapsed().as_secs());
        let total: u64 = self.counts.iter().map(|(_, n, _)| n).sum();
        let detail = self
            .counts
            .iter()
            .map(|(r, n, e)| format!("{r}={n} (e.g. {e})"))
            .collect::<Vec<_>>()
            .join(", ");
        tracing::warn!(
            count = total,
            seconds,
            "{total} {} in the last {} s: {detail}",
            self.what,
            seconds.max(1)
        );
        self.counts.clear();
        self.last_line = Some(Instant::now());
        self.lines += 1;
    }

    /// WARN lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }
}

impl Drop for LogSummary {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_one_line_per_interval_with_counts() {
        let mut s = LogSummary::new(
            "records sent to the dead-letter topic",
            Duration::from_secs(3600),
        );
        let mut built = 0;
        for i in 0..10_000 {
            s.note(
                if i % 2 == 0 {
                    "malformed_avro"
                } else {
                    "missing_key"
                },
                || {
                    built += 1;
                    format!("t/0@{i}")
                },
            );
        }
        assert_eq!(
            s.lines(),
            1,
            "the first event at once, then nothing within the interval"
        );
        assert_eq!(built, 3, "one example per reason and line");
        assert_eq!(
            s.counts,
            vec![
                ("missing_key", 5000, "t/0@1".to_string()),
                ("malformed_avro", 4999, "t/0@2".to_string())
            ]
        );
        s.flush();
        assert_eq!(s.lines(), 2);
        assert!(s.counts.is_empty());
        let mut s = LogSummary::new("x", Duration::ZERO);
        s.note("a", String::new);
        assert_eq!(s.lines(), 1, "a zero interval writes at once");
    }
}
