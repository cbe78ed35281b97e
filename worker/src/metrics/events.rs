//! The worker's observable events, each defined once (as Vector's internal
//! events are): one type per thing that happens, whose [`Emit::emit`]
//! writes its log line (level and message here, fields structured) and
//! counts its series, together. Call sites build the event and emit it;
//! they write no log line and name no series of their own.
//!
//! Series names ([`Series`]) and their label values (the `reason` enums
//! below) are typed: one list, from which [`super::Metrics::new`]
//! describes every series and registers every label value at 0, so an
//! alert needs no first occurrence. Counting is an index into handles
//! registered then: no lookup, lock or allocation per event. Events that
//! can happen once per record log at DEBUG only.

use super::{Metrics, Tally};
use metrics::{Key, Label, Recorder as _};
use metrics_exporter_prometheus::PrometheusRecorder;

/// An observable event: its log line and its series, written together.
pub trait Emit {
    fn emit(&self, metrics: &Metrics);
}

/// The label values of one counter series (its `reason` label).
pub trait Reason: Copy + 'static {
    /// The series these values label.
    const SERIES: Series;
    /// Every value, in declaration order (registered at 0).
    const ALL: &'static [Self];
    /// The exported label value.
    fn as_str(self) -> &'static str;
    /// This value's place in [`Reason::ALL`].
    fn index(self) -> usize;
}

/// An enum of label values: `as_str`, `ALL`, [`Reason`] for `series`.
macro_rules! label_values {
    ($(#[$m:meta])* $vis:vis enum $name:ident for $series:ident {
        $($(#[$vm:meta])* $var:ident = $s:literal,)+
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vm])* $var,)+
        }

        impl $name {
            /// The exported label value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$var => $s,)+
                }
            }

            /// The value exported as `s`, if any.
            pub fn from_name(s: &str) -> Option<Self> {
                <Self as $crate::metrics::events::Reason>::ALL
                    .iter()
                    .copied()
                    .find(|r| r.as_str() == s)
            }
        }

        impl $crate::metrics::events::Reason for $name {
            const SERIES: $crate::metrics::events::Series =
                $crate::metrics::events::Series::$series;
            const ALL: &'static [Self] = &[$(Self::$var,)+];
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
            fn index(self) -> usize {
                self as usize
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// The counter series with a `reason` label: name, help, label values.
macro_rules! series {
    ($($var:ident($reason:ty) = $name:literal, $help:literal;)+) => {
        /// A counter series with a `reason` label.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Series {
            $($var,)+
        }

        impl Series {
            pub const ALL: &'static [Series] = &[$(Series::$var,)+];

            /// The exported name.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Series::$var => $name,)+
                }
            }

            /// `# HELP`.
            pub const fn help(self) -> &'static str {
                match self {
                    $(Series::$var => $help,)+
                }
            }

            /// Every label value, registered at 0.
            pub fn reasons(self) -> Vec<&'static str> {
                match self {
                    $(Series::$var => <$reason as Reason>::ALL.iter().map(|r| r.as_str()).collect(),)+
                }
            }
        }
    };
}

series! {
    StateRestores(RestoreOutcome) = "riskstream_state_restores_total",
        "Partition assignments by how their customer state was rebuilt (reason: changelog = read from the changelog; no_commit = nothing committed yet; replayed_* = fell back to replaying the input topic, and why).";
    RetentionGapRecords(RetentionGapKind) = "riskstream_retention_gap_records_total",
        "Input records a partition's restore needed but the topic's retention had deleted (reason: state_only = below the committed offset, scored before but missing from the restored state; unscored = never scored).";
    ChangelogDropped(ChangelogDrop) = "riskstream_changelog_dropped_total",
        "Changelog records the topic refused for good (reason); their customers' state is not durable until they change again.";
    StateCapHits(StateCap) = "riskstream_state_cap_hits_total",
        "Per-key state entries dropped because a cap bit (reason: which cap).";
    DeliveryRetries(RetryReason) = "riskstream_delivery_retries_total",
        "Deliveries re-sent after a transient error (reason: librdkafka error code).";
    DeliveryAbandoned(AbandonedKind) = "riskstream_delivery_abandoned_total",
        "Records given up at shutdown after the drain time (reason: output or dead_letter).";
    LabelsSkipped(DecodeReason) = "riskstream_labels_skipped_total",
        "Label records skipped (reason: why).";
    PerformanceLabels(LabelOutcome) = "riskstream_performance_labels_total",
        "Labels the performance monitor received (reason: matched = joined with a decision scored here; unmatched = scored by another instance, before this process started or outside the sample; late = its day had already closed; dropped = the sidecar's queue was full).";
    EventClockResyncs(ResyncCause) = "riskstream_event_clock_resyncs_total",
        "Partition event-time clocks moved after a run of far-ahead records.";
    WatcherErrors(WatcherFailure) = "riskstream_watcher_errors_total",
        "Registry watcher failures (reason: panic or error).";
    RecordsDeadLettered(DeadLetterReason) = "riskstream_records_dead_lettered_total",
        "Records sent to the dead-letter topic (reason: stable code).";
    Transactions(TransactionOutcome) = "riskstream_transactions_total",
        "Exactly-once transactions ended (reason: committed, or aborted and rewound to the last commit).";
    PipelineRestarts(RestartCause) = "riskstream_pipeline_restarts_total",
        "Times the worker started its pipeline again in the same process (reason: fenced_static_member = the broker fenced the input consumer's group.instance.id).";
}

label_values! {
    /// How a partition's customer state was rebuilt on assignment.
    pub enum RestoreOutcome for StateRestores {
        Changelog = "changelog",
        NoCommit = "no_commit",
        ReplayedNoChangelog = "replayed_no_changelog",
        ReplayedReadFailed = "replayed_read_failed",
        ReplayedChangelogOff = "replayed_changelog_off",
    }
}

label_values! {
    /// Which side of the committed offset deleted records were.
    pub enum RetentionGapKind for RetentionGapRecords {
        StateOnly = "state_only",
        Unscored = "unscored",
    }
}

label_values! {
    /// Why a changelog record was dropped.
    pub enum ChangelogDrop for ChangelogDropped {
        RecordRefused = "record_refused",
    }
}

label_values! {
    /// The per-key state caps.
    pub enum StateCap for StateCapHits {
        CustomerHistory = "customer_history",
        TerminalLabels = "terminal_labels",
    }
}

label_values! {
    /// The transient librdkafka errors a delivery is re-sent after (the
    /// names of `sink::error_name`; `unknown`: no error code).
    pub enum RetryReason for DeliveryRetries {
        MessageTimedOut = "message_timed_out",
        Transport = "transport",
        AllBrokersDown = "all_brokers_down",
        RequestTimedOut = "request_timed_out",
        QueueFull = "queue_full",
        NotEnoughReplicas = "not_enough_replicas",
        NotLeaderForPartition = "not_leader_for_partition",
        Purged = "purged",
        Other = "other",
        Unknown = "unknown",
    }
}

label_values! {
    /// How an exactly-once transaction ended.
    pub enum TransactionOutcome for Transactions {
        Committed = "committed",
        Aborted = "aborted",
    }
}

label_values! {
    /// Why the pipeline was started again.
    pub enum RestartCause for PipelineRestarts {
        FencedStaticMember = "fenced_static_member",
    }
}

label_values! {
    /// What was given up.
    pub enum AbandonedKind for DeliveryAbandoned {
        Output = "output",
        DeadLetter = "dead_letter",
    }
}

label_values! {
    /// Why a record could not be decoded or was refused by the input
    /// guard (`DecodeError::code`): the stable reason code.
    pub enum DecodeReason for LabelsSkipped {
        MissingKey = "missing_key",
        EmptyPayload = "empty_payload",
        NotSingleObject = "not_single_object",
        UnknownFingerprint = "unknown_fingerprint",
        UnknownSchemaId = "unknown_schema_id",
        /// Never skipped nor dead-lettered: the source waits and retries.
        RegistryUnavailable = "schema_registry_unavailable",
        WrongSchema = "wrong_schema",
        MalformedAvro = "malformed_avro",
        InvalidField = "invalid_field",
        InvalidAmount = "invalid_amount",
        EventTimeOutOfRange = "event_time_out_of_range",
    }
}

label_values! {
    /// What became of a label the performance monitor received.
    pub enum LabelOutcome for PerformanceLabels {
        Matched = "matched",
        Unmatched = "unmatched",
        Late = "late",
        Dropped = "dropped",
    }
}

label_values! {
    /// Why a partition's event-time clock moved.
    pub enum ResyncCause for EventClockResyncs {
        AheadRun = "ahead_run",
    }
}

label_values! {
    /// How the registry watcher failed.
    pub enum WatcherFailure for WatcherErrors {
        Panic = "panic",
        Error = "error",
    }
}

label_values! {
    /// Why a record went to the dead-letter topic: the header
    /// `riskstream.reason` and the metric label.
    pub enum DeadLetterReason for RecordsDeadLettered {
        MissingKey = "missing_key",
        EmptyPayload = "empty_payload",
        NotSingleObject = "not_single_object",
        UnknownFingerprint = "unknown_fingerprint",
        UnknownSchemaId = "unknown_schema_id",
        WrongSchema = "wrong_schema",
        MalformedAvro = "malformed_avro",
        InvalidField = "invalid_field",
        InvalidAmount = "invalid_amount",
        EventTimeOutOfRange = "event_time_out_of_range",
        NonFiniteScore = "non_finite_score",
        OutputTooLarge = "output_too_large",
        DeliveryRejected = "delivery_rejected",
    }
}

impl From<DecodeReason> for DeadLetterReason {
    fn from(r: DecodeReason) -> Self {
        use DecodeReason as D;
        match r {
            D::MissingKey => Self::MissingKey,
            D::EmptyPayload => Self::EmptyPayload,
            D::NotSingleObject => Self::NotSingleObject,
            D::UnknownFingerprint => Self::UnknownFingerprint,
            D::UnknownSchemaId => Self::UnknownSchemaId,
            D::WrongSchema => Self::WrongSchema,
            D::MalformedAvro => Self::MalformedAvro,
            D::InvalidField => Self::InvalidField,
            D::InvalidAmount => Self::InvalidAmount,
            D::EventTimeOutOfRange => Self::EventTimeOutOfRange,
            // Never dead-lettered (the source waits); counted as a rejection if it were.
            D::RegistryUnavailable => Self::DeliveryRejected,
        }
    }
}

/// One series' counters, one per label value, indexed by [`Reason::index`].
#[derive(Debug)]
pub(crate) struct EventCounters {
    /// By [`Series`] (its discriminant), then by reason index.
    series: Vec<Vec<Tally>>,
}

impl EventCounters {
    /// Every series with every label value, registered at 0.
    pub(crate) fn register(recorder: &PrometheusRecorder) -> Self {
        let series = Series::ALL
            .iter()
            .map(|s| {
                s.reasons()
                    .into_iter()
                    .map(|r| {
                        let key = Key::from_parts(s.name(), vec![Label::new("reason", r)]);
                        Tally::new(recorder.register_counter(&key, &super::META))
                    })
                    .collect()
            })
            .collect();
        Self { series }
    }

    fn tally<R: Reason>(&self, r: R) -> &Tally {
        &self.series[R::SERIES as usize][r.index()]
    }

    /// Adds `n` to the series of `R`, label `r`.
    #[inline]
    pub(crate) fn add<R: Reason>(&self, r: R, n: u64) {
        if n > 0 {
            self.tally(r).add(n);
        }
    }

    /// The count of `r` since start-up.
    pub(crate) fn get<R: Reason>(&self, r: R) -> u64 {
        self.tally(r).get()
    }

    /// The sum over every label value of `R`'s series.
    pub(crate) fn total<R: Reason>(&self) -> u64 {
        R::ALL.iter().map(|r| self.get(*r)).sum()
    }
}

impl Metrics {
    /// Counts `n` events of label `r` (the [`Emit`] impls below call this).
    #[inline]
    fn count<R: Reason>(&self, r: R, n: u64) {
        self.events.add(r, n);
    }

    /// Events of label `r` counted since start-up.
    pub fn count_of<R: Reason>(&self, r: R) -> u64 {
        self.events.get(r)
    }
}

/// A partition's customer state, rebuilt on assignment; its input resumes.
#[derive(Debug)]
pub struct StateRestored {
    pub partition: i32,
    pub outcome: RestoreOutcome,
    pub customers: usize,
    pub changelog_records: u64,
    pub restore_ms: u64,
}

impl Emit for StateRestored {
    fn emit(&self, m: &Metrics) {
        m.count(self.outcome, 1);
        m.state_restore_records.increment(self.changelog_records);
        tracing::info!(
            partition = self.partition,
            outcome = self.outcome.as_str(),
            customers = self.customers,
            changelog_records = self.changelog_records,
            restore_ms = self.restore_ms,
            "partition state restored; resuming"
        );
    }
}

/// Records `resumed_at..first_held` of a partition were deleted by the
/// topic's retention before the restore read them: those below
/// `committed` were scored but their changes to state are missing
/// (`state_only`); the rest are never scored (`unscored`).
#[derive(Debug)]
pub struct RetentionGap {
    pub partition: i32,
    pub resumed_at: i64,
    pub committed: i64,
    pub first_held: i64,
    pub state_only: u64,
    pub unscored: u64,
}

impl Emit for RetentionGap {
    fn emit(&self, m: &Metrics) {
        m.count(RetentionGapKind::StateOnly, self.state_only);
        m.count(RetentionGapKind::Unscored, self.unscored);
        tracing::warn!(
            partition = self.partition,
            resumed_at = self.resumed_at,
            committed = self.committed,
            first_held = self.first_held,
            state_only = self.state_only,
            unscored = self.unscored,
            "the input topic's retention has deleted records the restore needs: the state misses the changes of those below the committed offset, those at or above it are not scored"
        );
    }
}

/// A partition's event-time clock jumped forward after a run of far-ahead records.
#[derive(Debug)]
pub struct EventClockResynced {
    pub partition: i32,
    pub jumped_ms: i64,
}

impl Emit for EventClockResynced {
    fn emit(&self, m: &Metrics) {
        m.count(ResyncCause::AheadRun, 1);
        tracing::warn!(
            partition = self.partition,
            jumped_ms = self.jumped_ms,
            "partition event-time clock moved forward after a run of far-ahead records (a gap in the stream?)"
        );
    }
}

/// A label record that could not be decoded or failed its checks (per record: DEBUG).
pub struct LabelSkipped<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub reason: DecodeReason,
    pub error: &'a dyn std::fmt::Display,
}

impl Emit for LabelSkipped<'_> {
    fn emit(&self, m: &Metrics) {
        m.count(self.reason, 1);
        tracing::debug!(
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            reason = self.reason.as_str(),
            error = %self.error,
            "undecodable label skipped"
        );
    }
}

/// A record acknowledged by the dead-letter topic (per record: DEBUG).
#[derive(Debug)]
pub struct DeadLettered<'a> {
    pub source_topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub reason: DeadLetterReason,
    pub detail: &'a str,
}

impl Emit for DeadLettered<'_> {
    fn emit(&self, m: &Metrics) {
        m.count(self.reason, 1);
        tracing::debug!(
            topic = self.source_topic,
            partition = self.partition,
            offset = self.offset,
            reason = self.reason.as_str(),
            error = self.detail,
            "record sent to the dead-letter topic"
        );
    }
}

/// A dead letter the dead-letter topic refused even truncated: skipped.
pub struct DeadLetterLost<'a> {
    pub partition: i32,
    pub offset: i64,
    pub error: &'a dyn std::fmt::Display,
    pub dlq: &'a str,
}

impl Emit for DeadLetterLost<'_> {
    fn emit(&self, m: &Metrics) {
        m.count(AbandonedKind::DeadLetter, 1);
        tracing::error!(
            partition = self.partition,
            offset = self.offset,
            error = %self.error,
            dlq = self.dlq,
            "the dead-letter topic refused this record even truncated; it is skipped (riskstream_delivery_abandoned_total{{reason=\"dead_letter\"}})"
        );
    }
}

/// The drain time ran out at shutdown: what was still queued, failed or
/// in flight is given up (its offsets are not committed).
#[derive(Debug)]
pub struct DrainAbandoned {
    pub queued: u64,
    pub failed: u64,
    pub in_flight: u64,
    pub drain_timeout_s: f64,
}

impl Emit for DrainAbandoned {
    fn emit(&self, m: &Metrics) {
        let total = self.queued + self.failed + self.in_flight;
        m.count(AbandonedKind::Output, total);
        tracing::warn!(
            abandoned = total,
            queued = self.queued,
            failed = self.failed,
            in_flight = self.in_flight,
            drain_timeout_s = self.drain_timeout_s,
            "drain time used up: {total} records abandoned; their offsets are not committed, so the next owner of their partitions scores them again"
        );
    }
}

/// A changelog record the topic refused for good (too large).
pub struct ChangelogRefused<'a> {
    pub error: &'a dyn std::fmt::Display,
}

impl Emit for ChangelogRefused<'_> {
    fn emit(&self, m: &Metrics) {
        m.count(ChangelogDrop::RecordRefused, 1);
        tracing::error!(
            error = %self.error,
            "the state changelog refused a customer's state; it is not durable until the customer changes again (riskstream_changelog_dropped_total)"
        );
    }
}

/// An exactly-once transaction ended (committed: DEBUG, one per commit
/// interval; aborted: WARN where it is decided).
#[derive(Debug)]
pub struct TransactionEnded {
    pub outcome: TransactionOutcome,
}

impl Emit for TransactionEnded {
    fn emit(&self, m: &Metrics) {
        m.count(self.outcome, 1);
        tracing::debug!(outcome = self.outcome.as_str(), "transaction ended");
    }
}

/// The pipeline was started again in the same process (WARN where it is
/// decided, `pipeline::run`).
#[derive(Debug)]
pub struct PipelineRestarted;

impl Emit for PipelineRestarted {
    fn emit(&self, m: &Metrics) {
        m.count(RestartCause::FencedStaticMember, 1);
    }
}

/// A delivery failed transiently and is re-sent (per record: DEBUG).
#[derive(Debug)]
pub struct DeliveryRetried {
    pub reason: RetryReason,
}

impl Emit for DeliveryRetried {
    fn emit(&self, m: &Metrics) {
        m.count(self.reason, 1);
        tracing::debug!(
            reason = self.reason.as_str(),
            "delivery failed transiently; re-sending"
        );
    }
}

/// Per-key state entries dropped by the state caps in one batch.
#[derive(Debug)]
pub struct StateCapsHit {
    pub customer_history: u64,
    pub terminal_labels: u64,
}

impl Emit for StateCapsHit {
    fn emit(&self, m: &Metrics) {
        if self.customer_history == 0 && self.terminal_labels == 0 {
            return;
        }
        m.count(StateCap::CustomerHistory, self.customer_history);
        m.count(StateCap::TerminalLabels, self.terminal_labels);
        tracing::debug!(
            customer_history = self.customer_history,
            terminal_labels = self.terminal_labels,
            "state caps dropped per-key entries"
        );
    }
}

/// Labels the performance monitor received, by outcome.
#[derive(Debug)]
pub struct PerformanceLabels {
    pub outcome: LabelOutcome,
    pub n: u64,
}

impl Emit for PerformanceLabels {
    fn emit(&self, m: &Metrics) {
        if self.n == 0 {
            return;
        }
        m.count(self.outcome, self.n);
        tracing::debug!(
            outcome = self.outcome.as_str(),
            labels = self.n,
            "performance monitor labels"
        );
    }
}

/// The registry watcher panicked; it restarts.
#[derive(Debug)]
pub struct WatcherPanicked<'a> {
    pub panic: &'a str,
}

impl Emit for WatcherPanicked<'_> {
    fn emit(&self, m: &Metrics) {
        m.count(WatcherFailure::Panic, 1);
        tracing::error!(
            panic = self.panic,
            "registry watcher panicked; restarting it (hot swap continues)"
        );
    }
}

/// The registry watcher cannot resolve a model reference: counted every
/// time, logged at ERROR when the error is new (else DEBUG).
#[derive(Debug)]
pub struct WatcherFailed<'a> {
    pub error: &'a str,
    pub reference: &'a str,
    pub repeated: bool,
}

impl Emit for WatcherFailed<'_> {
    fn emit(&self, m: &Metrics) {
        m.count(WatcherFailure::Error, 1);
        let (error, reference) = (self.error, self.reference);
        let msg = "registry watcher cannot resolve the model; retrying (the serving version keeps serving)";
        if self.repeated {
            tracing::debug!(error, reference, "{msg}");
        } else {
            tracing::error!(error, reference, "{msg}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_and_label_value_is_described_and_at_zero() {
        let t = Metrics::new().render();
        for s in Series::ALL {
            assert!(t.contains(&format!("# HELP {} ", s.name())), "{s:?}\n{t}");
            for r in s.reasons() {
                let line = format!("{}{{reason=\"{r}\"}} 0\n", s.name());
                assert!(t.contains(&line), "{line}\n{t}");
            }
        }
    }

    #[test]
    fn an_event_counts_its_series_and_label() {
        let m = Metrics::new();
        RetentionGap {
            partition: 1,
            resumed_at: 0,
            committed: 10,
            first_held: 15,
            state_only: 10,
            unscored: 5,
        }
        .emit(&m);
        DeliveryRetried {
            reason: RetryReason::Transport,
        }
        .emit(&m);
        let t = m.render();
        assert!(t.contains("riskstream_retention_gap_records_total{reason=\"state_only\"} 10"));
        assert!(t.contains("riskstream_retention_gap_records_total{reason=\"unscored\"} 5"));
        assert!(t.contains("riskstream_delivery_retries_total{reason=\"transport\"} 1"));
        assert_eq!(m.count_of(RetryReason::Transport), 1);
        assert_eq!(m.count_of(RetryReason::QueueFull), 0);
    }

    #[test]
    fn label_values_round_trip() {
        for r in DeadLetterReason::ALL {
            assert_eq!(DeadLetterReason::from_name(r.as_str()), Some(*r));
        }
        assert_eq!(LabelOutcome::from_name("late"), Some(LabelOutcome::Late));
        assert_eq!(LabelOutcome::from_name("nope"), None);
    }
}
