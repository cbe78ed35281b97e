//! The config file's tables (`[input]`, `[state]`, `[drift]`): each one
//! struct for the file, the environment and the flags, and its resolution
//! into the stage's config (the defaults are the stage types' constants).

use std::time::Duration;

use clap::builder::BoolishValueParser;

use super::layer::{help, section};
use crate::commit::{DeliveryConfig, Guarantee};
use crate::drift::performance::PerformanceSettings;
use crate::drift::{parse_seconds, DriftConfig, DriftSettings};
use crate::source::guard::InputLimits;
use crate::state::StateConfig;

section! {
    /// `[input]`: bounds on what a record may carry. Flags and variables
    /// carry no section prefix (`--max-amount`, `RISKSTREAM_MAX_AMOUNT`).
    pub struct InputSection {
        #[arg(long, env = "RISKSTREAM_MAX_AMOUNT", help = help(
            "Largest accepted amount; larger ones are dead-lettered (`invalid_amount`)",
            InputLimits::DEFAULT_MAX_AMOUNT,
        ))]
        pub(crate) max_amount: Option<f64>,
        #[arg(long, env = "RISKSTREAM_MAX_ID_BYTES", help = help(
            "Longest accepted id (transaction, customer, terminal), bytes",
            InputLimits::DEFAULT_MAX_ID_BYTES,
        ))]
        pub(crate) max_id_bytes: Option<usize>,
        #[arg(long, env = "RISKSTREAM_EVENT_TIME_MIN_MS", help = help(
            "Earliest accepted event time, epoch ms",
            InputLimits::DEFAULT_EVENT_TIME_MIN_MS,
        ))]
        pub(crate) event_time_min_ms: Option<i64>,
        #[arg(long, env = "RISKSTREAM_EVENT_TIME_MAX_FUTURE_MS", help = help(
            "Furthest an event time may be ahead of the wall clock, ms; 0 = unchecked",
            InputLimits::DEFAULT_EVENT_TIME_MAX_FUTURE.as_millis(),
        ))]
        pub(crate) event_time_max_future_ms: Option<u64>,
        #[arg(long, env = "RISKSTREAM_EVENT_TIME_MAX_AHEAD_MS", help = help(
            "Furthest an event time may be ahead of its partition's event-time clock, ms; 0 = unchecked",
            InputLimits::DEFAULT_EVENT_TIME_MAX_AHEAD.as_millis(),
        ))]
        pub(crate) event_time_max_ahead_ms: Option<u64>,
        #[arg(long, env = "RISKSTREAM_RESYNC_AFTER", help = help(
            "Consecutive far-ahead records after which a partition's event-time clock jumps to them",
            InputLimits::DEFAULT_RESYNC_AFTER,
        ))]
        pub(crate) resync_after: Option<u32>,
    }
}

impl InputSection {
    /// The bounds, defaults where unset; problems appended to `errors`.
    pub(crate) fn resolve(self, errors: &mut Vec<String>) -> InputLimits {
        let l = InputLimits {
            max_amount: self.max_amount.unwrap_or(InputLimits::DEFAULT_MAX_AMOUNT),
            max_id_bytes: self
                .max_id_bytes
                .unwrap_or(InputLimits::DEFAULT_MAX_ID_BYTES),
            event_time_min_ms: self
                .event_time_min_ms
                .unwrap_or(InputLimits::DEFAULT_EVENT_TIME_MIN_MS),
            event_time_max_future: self.event_time_max_future_ms.map_or(
                InputLimits::DEFAULT_EVENT_TIME_MAX_FUTURE,
                Duration::from_millis,
            ),
            event_time_max_ahead: self.event_time_max_ahead_ms.map_or(
                InputLimits::DEFAULT_EVENT_TIME_MAX_AHEAD,
                Duration::from_millis,
            ),
            resync_after: self
                .resync_after
                .unwrap_or(InputLimits::DEFAULT_RESYNC_AFTER),
        };
        if !(l.max_amount.is_finite() && l.max_amount > 0.0) {
            errors.push(format!(
                "max_amount: {} must be a positive number",
                l.max_amount
            ));
        }
        if l.max_id_bytes == 0 {
            errors.push("max_id_bytes: must be at least 1".into());
        }
        if l.resync_after == 0 {
            errors.push("input.resync_after: must be at least 1".into());
        }
        l
    }
}

/// State is kept in a changelog unless turned off.
pub(crate) const DEFAULT_STATE_ENABLED: bool = true;

section! {
    /// `[state]`: the customer-state changelog (`--state-*`, `RISKSTREAM_STATE_*`).
    pub struct StateSection {
        #[arg(
            id = "state_enabled",
            long = "state-enabled",
            env = "RISKSTREAM_STATE_ENABLED",
            value_name = "BOOL",
            num_args = 0..=1,
            default_missing_value = "true",
            value_parser = BoolishValueParser::new(),
            help = help(
                "Keep customer state in a changelog topic; false: every assignment replays the input partition's retained history instead (state then depends on retention)",
                DEFAULT_STATE_ENABLED,
            ),
        )]
        pub(crate) enabled: Option<bool>,
        #[arg(id = "state_topic", long = "state-topic", env = "RISKSTREAM_STATE_TOPIC", help = help(
            "Customer-state changelog topic",
            StateConfig::default_topic("<input_topic>", "<group>"),
        ))]
        pub(crate) topic: Option<String>,
        #[arg(long = "state-flush-interval-ms", env = "RISKSTREAM_STATE_FLUSH_INTERVAL_MS", help = help(
            "Changed customers are written to the changelog at most this often, ms",
            StateConfig::DEFAULT_FLUSH_INTERVAL.as_millis(),
        ))]
        pub(crate) flush_interval_ms: Option<u64>,
        #[arg(long = "state-restore-timeout-ms", env = "RISKSTREAM_STATE_RESTORE_TIMEOUT_MS", help = help(
            "Longest a partition's changelog read may take before the partition falls back to replaying the input, ms",
            StateConfig::DEFAULT_RESTORE_TIMEOUT.as_millis(),
        ))]
        pub(crate) restore_timeout_ms: Option<u64>,
    }
}

impl StateSection {
    /// The state stage's config; the topic's default depends on the input and group.
    pub(crate) fn resolve(self, input_topic: &str, group: &str) -> StateConfig {
        StateConfig {
            enabled: self.enabled.unwrap_or(DEFAULT_STATE_ENABLED),
            topic: self
                .topic
                .unwrap_or_else(|| StateConfig::default_topic(input_topic, group)),
            flush_interval: self
                .flush_interval_ms
                .map_or(StateConfig::DEFAULT_FLUSH_INTERVAL, Duration::from_millis),
            restore_timeout: self
                .restore_timeout_ms
                .map_or(StateConfig::DEFAULT_RESTORE_TIMEOUT, Duration::from_millis),
        }
    }
}

section! {
    /// `[delivery]`: what readers of the outputs are guaranteed
    /// (`--delivery`, `--commit-interval-ms`).
    pub struct DeliverySection {
        #[arg(id = "delivery_guarantee", long = "delivery", env = "RISKSTREAM_DELIVERY", value_enum, help = help(
            "exactly-once: outputs, dead letters, changelog and input offsets in one Kafka transaction per commit interval (read_committed readers see each input once); at-least-once: a crash may score records again",
            Guarantee::DEFAULT.as_str(),
        ))]
        pub(crate) guarantee: Option<Guarantee>,
        #[arg(long = "commit-interval-ms", env = "RISKSTREAM_COMMIT_INTERVAL_MS", help = help(
            "Exactly-once: a transaction is committed at least this often, ms (sooner when max_in_flight outputs are open)",
            DeliveryConfig::DEFAULT_COMMIT_INTERVAL.as_millis(),
        ))]
        pub(crate) commit_interval_ms: Option<u64>,
    }
}

impl DeliverySection {
    pub(crate) fn resolve(self, errors: &mut Vec<String>) -> DeliveryConfig {
        let d = DeliveryConfig {
            guarantee: self.guarantee.unwrap_or(Guarantee::DEFAULT),
            commit_interval: self.commit_interval_ms.map_or(
                DeliveryConfig::DEFAULT_COMMIT_INTERVAL,
                Duration::from_millis,
            ),
        };
        if !(Duration::from_millis(1)..=Duration::from_secs(60)).contains(&d.commit_interval) {
            errors.push("delivery.commit_interval_ms: not in 1..=60000".into());
        }
        d
    }
}

/// Window lengths as the flag takes them: "1h,6h,24h".
fn durations(seconds: &[u64]) -> String {
    let one = |s: &u64| match s % 3600 {
        0 => format!("{}h", s / 3600),
        _ => format!("{s}s"),
    };
    seconds.iter().map(one).collect::<Vec<_>>().join(",")
}

section! {
    /// `[drift]`: the drift sidecar (`--drift-*`, `RISKSTREAM_DRIFT_*`).
    pub struct DriftSection {
        #[arg(id = "drift_topic", long = "drift-topic", env = "RISKSTREAM_DRIFT_TOPIC", help = help(
            "Topic for drift reports; \"off\" disables the drift sidecar",
            DriftConfig::DEFAULT_TOPIC,
        ))]
        pub(crate) topic: Option<String>,
        #[arg(long = "drift-scales", env = "RISKSTREAM_DRIFT_SCALES", value_delimiter = ',', help = help(
            "Window lengths judged every quarter hour, comma-separated (1h…48h)",
            durations(&DriftSettings::DEFAULT_SCALES),
        ))]
        pub(crate) scales: Option<Vec<String>>,
        #[arg(long = "drift-false-alarms-per-year", env = "RISKSTREAM_DRIFT_FALSE_ALARMS_PER_YEAR", help = help(
            "False alarms allowed per model per year, all variables and scales together",
            DriftSettings::DEFAULT_FALSE_ALARMS_PER_YEAR,
        ))]
        pub(crate) false_alarms_per_year: Option<f64>,
        #[arg(long = "drift-min-records", env = "RISKSTREAM_DRIFT_MIN_RECORDS", help = help(
            "Windows with fewer records are reported, not judged",
            DriftSettings::DEFAULT_MIN_RECORDS,
        ))]
        pub(crate) min_records: Option<u64>,
        #[arg(long = "drift-clear-after", env = "RISKSTREAM_DRIFT_CLEAR_AFTER", help = help(
            "Evaluations (quarter hours) in a row with nothing over that clear an alert",
            DriftSettings::DEFAULT_CLEAR_AFTER,
        ))]
        pub(crate) clear_after: Option<u32>,
        #[arg(long = "drift-max-lateness-seconds", env = "RISKSTREAM_DRIFT_MAX_LATENESS_SECONDS", help = help(
            "A slice closes at the latest this long (event time) after its end",
            DriftSettings::DEFAULT_MAX_LATENESS_SECONDS,
        ))]
        pub(crate) max_lateness_seconds: Option<u64>,
        #[arg(long = "drift-idle-partition-seconds", env = "RISKSTREAM_DRIFT_IDLE_PARTITION_SECONDS", help = help(
            "A partition idle this long (wall clock) stops holding slices open",
            DriftSettings::DEFAULT_IDLE_PARTITION_SECONDS,
        ))]
        pub(crate) idle_partition_seconds: Option<u64>,
        #[arg(long = "drift-channel-batches", env = "RISKSTREAM_DRIFT_CHANNEL_BATCHES", help = help(
            "Capacity of the channel to the sidecar, in scored batches",
            DriftConfig::DEFAULT_CHANNEL_BATCHES,
        ))]
        pub(crate) channel_batches: Option<usize>,
        #[arg(
            long = "drift-global",
            env = "RISKSTREAM_DRIFT_GLOBAL",
            value_name = "BOOL",
            num_args = 0..=1,
            default_missing_value = "true",
            value_parser = BoolishValueParser::new(),
            help = help(
                "One verdict per model from every instance's slices merged; false: judge only this instance's share of the traffic (no slices published or merged, alerts raised per instance)",
                DriftConfig::DEFAULT_GLOBAL,
            ),
        )]
        pub(crate) global: Option<bool>,
        #[arg(long = "drift-performance-margin", env = "RISKSTREAM_DRIFT_PERFORMANCE_MARGIN", help = help(
            "A day's realised AUC, AP or F1 this far below the card's validation value raises",
            PerformanceSettings::DEFAULT_MARGIN,
        ))]
        pub(crate) performance_margin: Option<f64>,
        #[arg(long = "drift-performance-min-positives", env = "RISKSTREAM_DRIFT_PERFORMANCE_MIN_POSITIVES", help = help(
            "A day with fewer labelled frauds is reported, not judged",
            PerformanceSettings::DEFAULT_MIN_POSITIVES,
        ))]
        pub(crate) performance_min_positives: Option<u64>,
        #[arg(long = "drift-performance-horizon-days", env = "RISKSTREAM_DRIFT_PERFORMANCE_HORIZON_DAYS", help = help(
            "Days a decision waits for its label",
            PerformanceSettings::DEFAULT_HORIZON_DAYS,
        ))]
        pub(crate) performance_horizon_days: Option<u32>,
        #[arg(long = "drift-performance-max-tracked", env = "RISKSTREAM_DRIFT_PERFORMANCE_MAX_TRACKED", help = help(
            "Decisions kept waiting for labels at most; beyond, a deterministic sample",
            PerformanceSettings::DEFAULT_MAX_TRACKED,
        ))]
        pub(crate) performance_max_tracked: Option<usize>,
    }
}

impl DriftSection {
    /// The drift config, defaults where unset; problems appended to `errors`.
    pub(crate) fn resolve(self, errors: &mut Vec<String>) -> DriftConfig {
        let scales = match self.scales {
            None => DriftSettings::DEFAULT_SCALES.to_vec(),
            Some(list) => list
                .iter()
                .filter_map(|s| {
                    parse_seconds(s)
                        .map_err(|e| errors.push(format!("drift: scales: {e}")))
                        .ok()
                })
                .collect(),
        };
        let settings = DriftSettings {
            scales,
            false_alarms_per_year: self
                .false_alarms_per_year
                .unwrap_or(DriftSettings::DEFAULT_FALSE_ALARMS_PER_YEAR),
            min_records: self
                .min_records
                .unwrap_or(DriftSettings::DEFAULT_MIN_RECORDS),
            clear_after: self
                .clear_after
                .unwrap_or(DriftSettings::DEFAULT_CLEAR_AFTER),
            max_lateness_seconds: self
                .max_lateness_seconds
                .unwrap_or(DriftSettings::DEFAULT_MAX_LATENESS_SECONDS),
            idle_partition_seconds: self
                .idle_partition_seconds
                .unwrap_or(DriftSettings::DEFAULT_IDLE_PARTITION_SECONDS),
        };
        errors.extend(settings.validate());
        let performance = PerformanceSettings {
            margin: self
                .performance_margin
                .unwrap_or(PerformanceSettings::DEFAULT_MARGIN),
            min_positives: self
                .performance_min_positives
                .unwrap_or(PerformanceSettings::DEFAULT_MIN_POSITIVES),
            horizon_days: self
                .performance_horizon_days
                .unwrap_or(PerformanceSettings::DEFAULT_HORIZON_DAYS),
            max_tracked: self
                .performance_max_tracked
                .unwrap_or(PerformanceSettings::DEFAULT_MAX_TRACKED),
        };
        errors.extend(performance.validate());
        let topic = match self.topic.as_deref().unwrap_or(DriftConfig::DEFAULT_TOPIC) {
            "off" => None,
            "" => {
                errors.push("drift_topic: must not be empty (\"off\" disables drift)".into());
                None
            }
            t => Some(t.to_string()),
        };
        let channel_batches = self
            .channel_batches
            .unwrap_or(DriftConfig::DEFAULT_CHANNEL_BATCHES);
        if channel_batches == 0 {
            errors.push("drift: channel_batches must be at least 1".into());
        }
        DriftConfig {
            topic,
            settings,
            channel_batches,
            global: self.global.unwrap_or(DriftConfig::DEFAULT_GLOBAL),
            performance,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::layer::Layered;
    use super::*;

    #[test]
    fn flags_override_the_file_and_bad_values_are_reported() {
        let file: DriftSection =
            toml::from_str("scales = [\"2h\", \"12h\"]\nfalse_alarms_per_year = 0.5\n").unwrap();
        let args = DriftSection {
            false_alarms_per_year: Some(2.0),
            clear_after: Some(0),
            ..Default::default()
        };
        let mut errors = Vec::new();
        let c = args.over(file).resolve(&mut errors);
        assert_eq!(c.settings.scales, vec![7200, 43200]);
        assert_eq!(c.settings.false_alarms_per_year, 2.0);
        assert_eq!(c.topic.as_deref(), Some("riskstream.drift"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(toml::from_str::<DriftSection>("windw = 1").is_err());
        // An uncalibrated scale and a bad duration are both reported.
        let bad = DriftSection {
            scales: Some(vec!["5h".into(), "6x".into()]),
            ..Default::default()
        };
        let mut errors = Vec::new();
        bad.resolve(&mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(parse_seconds("90"), Ok(90));
        assert_eq!(parse_seconds("2d"), Ok(172_800));
    }

    #[test]
    fn unset_sections_resolve_to_the_stage_defaults() {
        let mut errors = Vec::new();
        let drift = DriftSection::default().resolve(&mut errors);
        assert_eq!(drift.settings, DriftSettings::default());
        assert_eq!(drift.performance, PerformanceSettings::default());
        assert!(drift.global);
        assert_eq!(
            InputSection::default().resolve(&mut errors),
            InputLimits::default()
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(durations(&DriftSettings::DEFAULT_SCALES), "1h,6h,24h");
    }
}
