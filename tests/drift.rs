//! Drift: the statistics against scipy's values, no alert on the 54
//! stationary days after the validation week, and shifts injected from
//! 2018-08-22 00:00 detected on the right variable within the stated hours
//! (through the `riskstream drift` command, fraud-mlp/1, default settings).

mod common;

use std::path::{Path, PathBuf};

use riskstream::dataset::{day_index, for_each_row, HandbookRow};

/// The statistics: the worker's own, and those only these tests use
/// (the KS p-value, Wasserstein-1 and the binary chi-squared test), kept
/// beside the scipy fixtures they are checked against.
mod stats {
    pub use riskstream::drift::stats::{bin_of, ks_statistic, psi};
    use statrs::distribution::{ChiSquared, ContinuousCDF};

    /// Survival function of the Kolmogorov distribution,
    /// P(K > x) = 2 Σ_{k≥1} (−1)^{k−1} e^{−2k²x²} (scipy's `kstwobign.sf`).
    pub fn kolmogorov_sf(x: f64) -> f64 {
        if x <= 0.0 {
            return 1.0;
        }
        if x < 0.2 {
            // The alternating series converges slowly here; use the dual form
            // P(K ≤ x) = √(2π)/x Σ e^{−(2k−1)²π²/(8x²)}.
            let s: f64 = (1..=20)
                .map(|k| {
                    let k = f64::from(2 * k - 1);
                    (-k * k * std::f64::consts::PI.powi(2) / (8.0 * x * x)).exp()
                })
                .sum();
            return 1.0 - (2.0 * std::f64::consts::PI).sqrt() / x * s;
        }
        let mut sum = 0.0;
        for k in 1..=100 {
            let k = f64::from(k);
            let term = (-2.0 * k * k * x * x).exp();
            sum += if k as i64 % 2 == 1 { term } else { -term };
            if term < 1e-300 {
                break;
            }
        }
        (2.0 * sum).clamp(0.0, 1.0)
    }

    /// Asymptotic p-value of a two-sample KS statistic `d` for sample sizes
    /// `n` and `m`: `kolmogorov_sf(d · √(nm/(n+m)))`.
    pub fn ks_pvalue(d: f64, n: usize, m: usize) -> f64 {
        if n == 0 || m == 0 {
            return 1.0;
        }
        let (n, m) = (n as f64, m as f64);
        kolmogorov_sf(d * (n * m / (n + m)).sqrt())
    }

    /// Wasserstein-1 (earth mover's) distance between the empirical
    /// distributions of two sorted samples: ∫ |F_a(x) − F_b(x)| dx.
    pub fn wasserstein(a: &[f64], b: &[f64]) -> f64 {
        if a.is_empty() || b.is_empty() {
            return 0.0;
        }
        let (na, nb) = (a.len() as f64, b.len() as f64);
        let (mut i, mut j) = (0usize, 0usize);
        let mut x = a[0].min(b[0]);
        let mut area = 0.0;
        while i < a.len() || j < b.len() {
            let next = match (a.get(i), b.get(j)) {
                (Some(&u), Some(&v)) => u.min(v),
                (Some(&u), None) => u,
                (None, Some(&v)) => v,
                (None, None) => break,
            };
            area += (i as f64 / na - j as f64 / nb).abs() * (next - x);
            x = next;
            while i < a.len() && a[i] <= x {
                i += 1;
            }
            while j < b.len() && b[j] <= x {
                j += 1;
            }
        }
        area
    }

    /// Chi-squared goodness of fit of `ones` out of `m` against an expected
    /// share `p` (one degree of freedom). Returns (statistic, p-value); a
    /// degenerate reference (p = 0 or 1) gives p-value 0 when the window
    /// disagrees and 1 when it agrees.
    pub fn chi2_binary(ones: u64, m: u64, p: f64) -> (f64, f64) {
        if m == 0 {
            return (0.0, 1.0);
        }
        let m_f = m as f64;
        let (e1, e0) = (m_f * p, m_f * (1.0 - p));
        let (o1, o0) = (ones as f64, m_f - ones as f64);
        if e1 <= 0.0 || e0 <= 0.0 {
            let agrees = (e1 <= 0.0 && o1 == 0.0) || (e0 <= 0.0 && o0 == 0.0);
            return if agrees {
                (0.0, 1.0)
            } else {
                (f64::INFINITY, 0.0)
            };
        }
        let x2 = (o1 - e1).powi(2) / e1 + (o0 - e0).powi(2) / e0;
        let pv = ChiSquared::new(1.0).map_or(f64::NAN, |c| c.sf(x2));
        (x2, pv)
    }
}

fn fixtures() -> serde_json::Value {
    let p = common::repo().join("tests/fixtures/drift/stats.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-300)
}

#[test]
fn statistics_match_scipy() {
    let f = fixtures();
    for c in f["two_sample"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let mut a = floats(&c["reference"]);
        let mut b = floats(&c["current"]);
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        let d = stats::ks_statistic(&a, &b);
        assert!(
            close(d, c["ks_statistic"].as_f64().unwrap(), 1e-12),
            "{name}: KS {d}"
        );
        let p = stats::ks_pvalue(d, a.len(), b.len());
        let want = c["ks_pvalue_kstwobign"].as_f64().unwrap();
        assert!(close(p, want, 1e-6), "{name}: KS p {p} vs {want}");
        let w = stats::wasserstein(&a, &b);
        assert!(
            close(w, c["wasserstein"].as_f64().unwrap(), 1e-9),
            "{name}: W {w}"
        );
        // PSI over the same bins, counted by the worker's own binning.
        let edges = floats(&c["edges"]);
        let count = |v: &[f64]| {
            let mut k = vec![0u64; edges.len() + 1];
            for x in v {
                k[stats::bin_of(&edges, *x)] += 1;
            }
            k
        };
        let (rc, cc) = (count(&a), count(&b));
        let want_rc: Vec<u64> = serde_json::from_value(c["reference_counts"].clone()).unwrap();
        assert_eq!(rc, want_rc, "{name}: reference bins");
        let psi = stats::psi(&rc, &cc);
        assert!(
            close(psi, c["psi"].as_f64().unwrap(), 1e-9),
            "{name}: PSI {psi}"
        );
    }
    for c in f["binary"].as_array().unwrap() {
        let (x2, p) = stats::chi2_binary(
            c["ones"].as_u64().unwrap(),
            c["m"].as_u64().unwrap(),
            c["p"].as_f64().unwrap(),
        );
        assert!(
            close(x2, c["chi2"].as_f64().unwrap(), 1e-9),
            "chi2 {x2} {c}"
        );
        assert!(
            close(p, c["pvalue"].as_f64().unwrap(), 1e-6),
            "chi2 p {p} {c}"
        );
    }
    for c in f["kolmogorov"].as_array().unwrap() {
        let x = c["x"].as_f64().unwrap();
        let sf = stats::kolmogorov_sf(x);
        assert!(
            (sf - c["sf"].as_f64().unwrap()).abs() < 1e-9,
            "sf({x}) = {sf} {c}"
        );
    }
}

/// Runs `riskstream drift` and returns its report.json.
fn drift(csv: &Path, from: &str, to: &str, out: &Path) -> serde_json::Value {
    let (report, text) = common::offline_drift("fraud-mlp/1", csv, from, to, out);
    assert!(text.contains("| variable |"), "{text}");
    eprintln!("{text}");
    report
}

/// (decided at, ms; variable) of every alert raised.
fn raised(report: &serde_json::Value) -> Vec<(i64, String)> {
    report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["raised"].as_bool().unwrap())
        .map(|a| {
            (
                a["decided_at"].as_i64().unwrap(),
                a["variable"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const HOUR_MS: i64 = 3_600_000;

/// Epoch ms of a day's midnight (UTC).
fn midnight(day: &str) -> i64 {
    riskstream::dataset::EPOCH_2018_04_01_MS
        + (day_index(day).unwrap() - day_index("2018-04-01").unwrap()) * 86_400_000
}

#[test]
fn no_alert_over_the_unchanged_days_after_the_validation_week() {
    // fraud-mlp/1: trained on 2018-06-01…07-24, validated on 08-01…08-07;
    // the shared data ends on 09-14 (38 days from 08-08).
    let out = tempfile::tempdir().unwrap();
    let r = drift(
        &common::handbook_csv(),
        "2018-08-08",
        "2018-09-30",
        out.path(),
    );
    assert_eq!(raised(&r), vec![], "alerts on stationary traffic");
    // An evaluation every quarter hour of the 38 days, nothing late (the
    // CSV is in time order).
    let n = r["evaluations"].as_u64().unwrap();
    assert_eq!(n, 38 * 96, "{n} evaluations");
    assert_eq!(r["late_records"], 0);
    assert!(r["plots"].as_array().unwrap().is_empty());
    // The thresholds are not so wide that nothing comes near them: the
    // largest statistic / threshold of the period is of the order of one.
    let peak = r["variables"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| {
            v["peak"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_f64().unwrap())
        })
        .fold(0.0, f64::max);
    assert!((0.3..1.0).contains(&peak), "peak {peak}");
    // Realised performance from the labels: every day judged, none below
    // the card's validation values by the margin.
    let perf = r["performance"].as_array().unwrap();
    assert_eq!(perf.len(), 38, "{perf:?}");
    for d in perf {
        assert_eq!(d["judged"], true, "{d}");
        assert_eq!(d["below"], serde_json::json!([]), "{d}");
        assert!(d["auc_roc"].as_f64().unwrap() > 0.8, "{d}");
    }
}

/// The days realised performance raised an alert on.
fn performance_raised(r: &serde_json::Value) -> Vec<String> {
    r["performance"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["raised"] == true)
        .map(|d| d["day"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_new_fraud_pattern_the_model_misses_raises_realised_performance_on_its_first_day() {
    // Concept drift: from the shift on, the frauds are other transactions
    // (as many, at random); the inputs do not move, the labels do.
    let dir = tempfile::tempdir().unwrap();
    let csv = shifted_csv(dir.path(), TO, |r| {
        r.fraud = u8::from(draw(r.transaction_id ^ 0x5eed) < 0.009);
    });
    let r = drift(&csv, FROM, TO, &dir.path().join("out"));
    assert_eq!(
        performance_raised(&r),
        vec![SHIFT_DAY.to_string()],
        "{}",
        r["performance"]
    );
    let days = r["performance"].as_array().unwrap();
    let shifted = days.iter().find(|d| d["day"] == SHIFT_DAY).unwrap();
    assert!(shifted["auc_roc"].as_f64().unwrap() < 0.65, "{shifted}");
    let below: Vec<&str> = shifted["below"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    assert!(
        below.contains(&"auc_roc") && below.contains(&"average_precision"),
        "{below:?}"
    );
}

/// The shift starts at this instant (00:00 UTC).
const SHIFT_DAY: &str = "2018-08-22";
const FROM: &str = "2018-08-08";
const TO: &str = "2018-08-24";

/// Writes the handbook rows from 40 days before `FROM` to `to`, modified by
/// `shift` from `SHIFT_DAY` on, re-sorted by time and renumbered.
fn shifted_csv(dir: &Path, to: &str, shift: impl Fn(&mut HandbookRow)) -> PathBuf {
    let (first, start, last) = (
        day_index(FROM).unwrap() - 40,
        day_index(SHIFT_DAY).unwrap(),
        day_index(to).unwrap(),
    );
    let mut rows = Vec::new();
    for_each_row::<riskstream::dataset::DatasetError>(&common::handbook_csv(), |mut r| {
        if r.time_days > last {
            return Ok(false);
        }
        if r.time_days >= first {
            if r.time_days >= start {
                shift(&mut r);
            }
            rows.push(r);
        }
        Ok(true)
    })
    .unwrap();
    rows.sort_by_key(|r| (r.time_seconds, r.transaction_id));
    for (i, r) in rows.iter_mut().enumerate() {
        r.transaction_id = i as u64;
        r.time_days = r.time_seconds.div_euclid(86_400);
    }
    let path = dir.join("shifted.csv");
    common::write_handbook_csv(&path, &rows);
    path
}

/// A stable pseudo-random draw in [0, 1) from a transaction id.
fn draw(id: u64) -> f64 {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64
}

/// Hours from the shift to the first alert on `var` (decided at).
fn delay_hours(report: &serde_json::Value, var: &str) -> Option<f64> {
    raised(report)
        .into_iter()
        .find(|(_, v)| v == var)
        .map(|(t, _)| (t - midnight(SHIFT_DAY)) as f64 / HOUR_MS as f64)
}

fn assert_quiet_before_shift(r: &serde_json::Value) {
    let early: Vec<_> = raised(r)
        .into_iter()
        .filter(|(t, _)| *t <= midnight(SHIFT_DAY))
        .collect();
    assert!(early.is_empty(), "alerts before the shift: {early:?}");
}

/// The model inputs an amount shift moves at once.
const AMOUNT_INPUTS: [&str; 4] = [
    "TX_AMOUNT",
    "CUSTOMER_ID_AMOUNT_RATIO_30DAY",
    "CUSTOMER_ID_AMOUNT_ZSCORE_30DAY",
    "CUSTOMER_ID_AMOUNT_RATIO_MAX_30DAY",
];

#[test]
fn amounts_times_one_and_a_half_raise_the_amount_within_two_hours() {
    let dir = tempfile::tempdir().unwrap();
    let csv = shifted_csv(dir.path(), TO, |r| r.amount *= 1.5);
    let r = drift(&csv, FROM, TO, &dir.path().join("out"));
    assert_quiet_before_shift(&r);
    // The shift starts at midnight, in the quietest hours (about 100
    // transactions an hour): the amount-against-history inputs raise first,
    // the amount itself by the end of the second hour.
    let first = AMOUNT_INPUTS
        .iter()
        .filter_map(|v| delay_hours(&r, v))
        .fold(f64::INFINITY, f64::min);
    assert!(first <= 2.0, "{first} h: {:?}", raised(&r));
    let d = delay_hours(&r, "TX_AMOUNT").expect("TX_AMOUNT alert");
    assert!((0.0..=2.1).contains(&d), "{d} h: {:?}", raised(&r));
    // Its effect size is reported with it: amounts moved up by about half
    // of the reference mean, over a standard deviation of 0.8 of it.
    let a = r["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["variable"] == "TX_AMOUNT")
        .unwrap();
    let effect = a["effect"].as_f64().unwrap();
    assert!((0.3..1.2).contains(&effect), "{a}");
    assert!(
        !raised(&r).iter().any(|(_, v)| v.starts_with("TERMINAL")),
        "{:?}",
        raised(&r)
    );
    let plots: Vec<&str> = r["plots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(plots.contains(&"tx_amount_timeline.png"), "{plots:?}");
    assert!(dir.path().join("out/tx_amount_timeline.png").exists());
    assert!(dir.path().join("out/tx_amount.png").exists());
}

#[test]
fn amounts_times_one_point_one_raise_an_amount_input_within_twelve_hours() {
    let dir = tempfile::tempdir().unwrap();
    let csv = shifted_csv(dir.path(), TO, |r| r.amount *= 1.1);
    let r = drift(&csv, FROM, TO, &dir.path().join("out"));
    assert_quiet_before_shift(&r);
    let d = AMOUNT_INPUTS
        .iter()
        .filter_map(|v| delay_hours(&r, v))
        .fold(f64::INFINITY, f64::min);
    assert!(d <= 12.0, "{d} h: {:?}", raised(&r));
}

#[test]
fn a_doubled_night_share_raises_the_night_flag_within_a_day() {
    let dir = tempfile::tempdir().unwrap();
    // Move 21 % of daytime transactions into the night of the same day:
    // the night share goes from 17.4 % to about 35 %.
    let csv = shifted_csv(dir.path(), TO, |r| {
        let s = r.time_seconds.rem_euclid(86_400);
        if s >= 7 * 3600 && draw(r.transaction_id) < 0.2107 {
            let night = (s / 3600) % 7 * 3600 + s % 3600;
            r.time_seconds += night - s;
        }
    });
    let r = drift(&csv, FROM, TO, &dir.path().join("out"));
    assert_quiet_before_shift(&r);
    let d = delay_hours(&r, "TX_DURING_NIGHT").expect("night alert");
    assert!(d <= 24.0, "{d} h: {:?}", raised(&r));
    assert!(
        !raised(&r).iter().any(|(_, v)| v == "TX_AMOUNT"),
        "{:?}",
        raised(&r)
    );
}

#[test]
fn compromised_terminal_wave_raises_terminal_risk_when_its_labels_arrive() {
    let dir = tempfile::tempdir().unwrap();
    // 200 more terminals compromised for 28 days from the shift on
    // (scenario 2): every transaction there is a fraud.
    let start = day_index(SHIFT_DAY).unwrap();
    let to = "2018-09-02";
    let csv = shifted_csv(dir.path(), to, |r| {
        if r.terminal_id % 50 == 7 && r.time_days < start + 28 {
            r.fraud = 1;
            r.scenario = 2;
        }
    });
    let r = drift(&csv, FROM, to, &dir.path().join("out"));
    assert_quiet_before_shift(&r);
    let alerts = raised(&r);
    // Labels arrive a week late: the terminal features move from the 8th day on.
    let risk = delay_hours(&r, "TERMINAL_ID_RISK_1DAY_WINDOW")
        .into_iter()
        .chain(delay_hours(&r, "TERMINAL_ID_RISK_7DAY_WINDOW"))
        .fold(f64::INFINITY, f64::min);
    assert!(
        (7.0 * 24.0..=9.0 * 24.0).contains(&risk),
        "{risk} h: {alerts:?}"
    );
    assert!(
        !alerts
            .iter()
            .any(|(_, v)| v == "TX_AMOUNT" || v.starts_with("CUSTOMER")),
        "{alerts:?}"
    );
}

#[test]
fn identical_samples_show_no_drift() {
    let a: Vec<f64> = (0..100).map(f64::from).collect();
    assert_eq!(stats::ks_statistic(&a, &a), 0.0);
    assert_eq!(stats::wasserstein(&a, &a), 0.0);
    assert!(stats::psi(&[10, 20, 30], &[1, 2, 3]).abs() < 1e-12);
    assert!((stats::ks_pvalue(0.0, 100, 100) - 1.0).abs() < 1e-12);
}

#[test]
fn shifted_samples_move_each_statistic() {
    let a: Vec<f64> = (0..100).map(f64::from).collect();
    let b: Vec<f64> = a.iter().map(|x| x + 10.0).collect();
    assert!((stats::wasserstein(&a, &b) - 10.0).abs() < 1e-9);
    assert!((stats::ks_statistic(&a, &b) - 0.10).abs() < 1e-12);
    let (x2, p) = stats::chi2_binary(60, 100, 0.5);
    assert!((x2 - 4.0).abs() < 1e-12);
    assert!((p - 0.0455).abs() < 1e-3, "{p}");
}

#[test]
fn kolmogorov_series_agree_where_they_meet() {
    // Both forms near the switch point and known values of scipy.stats.kstwobign.sf.
    assert!((stats::kolmogorov_sf(1.0) - 0.269_999_671_677_355_8).abs() < 1e-12);
    assert!((stats::kolmogorov_sf(1.358_098_8) - 0.05).abs() < 1e-6);
    let below = stats::kolmogorov_sf(0.199_999_9);
    let above = stats::kolmogorov_sf(0.200_000_1);
    assert!((below - above).abs() < 1e-6, "{below} {above}");
}
