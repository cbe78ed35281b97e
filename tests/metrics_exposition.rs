//! `/metrics` against Prometheus' own checker: every series the worker can
//! expose, populated (labels with quotes, backslashes and newlines
//! included), passes `promtool check metrics`, with `# HELP` and `# TYPE`
//! for each. Needs no broker; the promtool tests are tier 2 (the
//! `external-tests` feature, docs/testing.md), the rest is tier 1.

mod common;

use riskstream::metrics::events::{
    DeadLetterReason, DeadLettered, DeliveryRetried, Emit as _, RetryReason,
};
use riskstream::metrics::{DriftGauge, Metrics, ModelInfo};

/// Every kind of series, with values.
fn populated() -> Metrics {
    let m = Metrics::new();
    m.consumed.increment(10);
    m.delivered.add(9);
    DeadLettered {
        source_topic: "transactions",
        partition: 0,
        offset: 7,
        reason: DeadLetterReason::MalformedAvro,
        detail: "malformed Avro datum",
    }
    .emit(&m);
    for _ in 0..2 {
        DeliveryRetried {
            reason: RetryReason::Transport,
        }
        .emit(&m);
    }
    m.count_version("fraud-mlp", "3", 9, 1, false);
    m.count_version("fraud-mlp", "4", 5, 2, true);
    m.set_model_info(&[ModelInfo {
        model: "fraud-mlp".into(),
        version: "3".into(),
        device: "cpu (burn \"flex\") \\ a\nb".into(),
        role: "champion",
    }]);
    m.set_consumer_lag("transactions", &[(0, 12), (1, 0)]);
    m.set_drift(&[DriftGauge {
        variable: "TX_AMOUNT".into(),
        scales: vec![
            ("1h".into(), vec![("z", 7.5), ("z_high", 5.1)]),
            ("24h".into(), vec![("psi", 0.3), ("chi2", 120.0)]),
        ],
        alerting: true,
    }]);
    m.set_performance(
        &riskstream::metrics::PerformanceGauge {
            model: "fraud-mlp/3".into(),
            values: vec![("auc_roc", 0.87), ("f1", 0.7), ("labelled", 9500.0)],
            alerting: true,
        },
        true,
    );
    m.registry_waiting.add(1);
    m.labels_behind_seconds.set(42);
    for i in 0..1000 {
        let s = f64::from(i) * 1e-4;
        m.processing_seconds.record(s);
        m.end_to_end_seconds.record(s * 2.0);
        m.delivery_seconds.record(s / 2.0);
        m.event_lag_seconds.record(s);
        m.inference_seconds.record(s / 10.0);
        m.scoring_wait_seconds.record(s);
    }
    m.batch_size.record(512.0);
    m
}

#[test]
fn every_series_is_described_and_typed() {
    let text = populated().render();
    let mut bases = std::collections::BTreeSet::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| text.contains(&format!("# TYPE {b} histogram")))
            .unwrap_or(name);
        bases.insert(base.to_string());
    }
    assert!(bases.len() >= 30, "{bases:?}");
    for b in &bases {
        assert!(
            text.contains(&format!("# HELP {b} ")),
            "{b}: no HELP\n{text}"
        );
        assert!(
            text.contains(&format!("# TYPE {b} ")),
            "{b}: no TYPE\n{text}"
        );
    }
    // Label values with quotes, backslashes and newlines are escaped.
    assert!(
        text.contains(r#"device="cpu (burn \"flex\") \\ a\nb""#),
        "{text}"
    );
}

#[test]
fn every_reason_series_exists_at_start_up_for_every_label_value() {
    let text = Metrics::new().render();
    for s in riskstream::metrics::events::Series::ALL {
        assert!(text.contains(&format!("# HELP {} ", s.name())), "{s:?}");
        for r in s.reasons() {
            let line = format!("{}{{reason=\"{r}\"}} 0\n", s.name());
            assert!(text.contains(&line), "{line}\n{text}");
        }
    }
}

/// Tier 2: promtool, an outside tool (scripts/promtool.sh installs it).
#[cfg(feature = "external-tests")]
mod external {
    use super::*;

    #[test]
    fn the_exposition_passes_promtool() {
        let text = populated().render();
        let problems = common::promtool_check(&text);
        assert!(
            problems.is_empty(),
            "promtool check metrics:\n{problems}\n---\n{text}"
        );
    }

    #[test]
    fn promtool_is_a_real_check() {
        // The same checker refuses a broken exposition (so the test above can fail).
        let problems = common::promtool_check("# TYPE x counter\nx{a=\"1} 1\n");
        assert!(
            !problems.is_empty(),
            "promtool accepted a broken exposition"
        );
    }
}
