//! Drift: the statistics against scipy's values, no alert on stationary
//! traffic, and injected shifts detected on the right variable within a
//! stated number of daily windows (through the `riskstream drift` command).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use riskstream::dataset::{day_index, for_each_row, HandbookRow};
use riskstream::drift::stats;

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
    let o = Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .current_dir(common::repo())
        .args([
            "drift",
            "--model",
            "fraud-mlp/1",
            "--from",
            from,
            "--to",
            to,
            "--csv",
        ])
        .arg(csv)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("| variable |"), "{text}");
    eprintln!("{text}");
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

/// (window, variable) of every alert raised.
fn raised(report: &serde_json::Value) -> Vec<(u64, String)> {
    report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["raised"].as_bool().unwrap())
        .map(|a| {
            (
                a["window"].as_u64().unwrap(),
                a["variable"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn no_alert_on_the_two_weeks_after_training() {
    // fraud-mlp/1 was trained on 2018-06-01…07-24.
    let out = tempfile::tempdir().unwrap();
    let r = drift(
        &common::handbook_csv(),
        "2018-07-25",
        "2018-08-07",
        out.path(),
    );
    let windows = r["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 14, "daily windows");
    assert!(windows.iter().all(|w| w["judged"].as_bool().unwrap()));
    assert_eq!(raised(&r), vec![], "alerts on stationary traffic");
    assert!(r["plots"].as_array().unwrap().is_empty());
}

/// Injection starts on this day, the 8th daily window (index 7) of the period.
const SHIFT_DAY: &str = "2018-08-01";
const FROM: &str = "2018-07-25";
const TO: &str = "2018-08-21";

/// Writes the handbook rows from 40 days before `FROM` to `TO`, modified by
/// `shift` from `SHIFT_DAY` on, re-sorted by time and renumbered.
fn shifted_csv(dir: &Path, shift: impl Fn(&mut HandbookRow)) -> PathBuf {
    let (first, start, last) = (
        day_index(FROM).unwrap() - 40,
        day_index(SHIFT_DAY).unwrap(),
        day_index(TO).unwrap(),
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

/// Windows from the first injected one to the first alert on `var`.
fn delay(report: &serde_json::Value, var: &str) -> Option<u64> {
    raised(report)
        .into_iter()
        .find(|(_, v)| v == var)
        .map(|(w, _)| w - 7)
}

fn assert_quiet_before_shift(r: &serde_json::Value) {
    let early: Vec<_> = raised(r).into_iter().filter(|(w, _)| *w < 7).collect();
    assert!(early.is_empty(), "alerts before the shift: {early:?}");
}

#[test]
fn amounts_times_one_and_a_half_alert_on_the_amount() {
    let dir = tempfile::tempdir().unwrap();
    let csv = shifted_csv(dir.path(), |r| r.amount *= 1.5);
    let r = drift(&csv, FROM, TO, &dir.path().join("out"));
    assert_quiet_before_shift(&r);
    let d = delay(&r, "TX_AMOUNT").expect("TX_AMOUNT alert");
    // Two windows over the threshold raise it: the first two shifted days.
    assert_eq!(d, 1, "{:?}", raised(&r));
    let first: BTreeSet<String> = raised(&r)
        .into_iter()
        .filter(|(w, _)| *w == 8)
        .map(|(_, v)| v)
        .collect();
    assert!(
        first.contains("CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"),
        "{first:?}"
    );
    assert!(
        !first.iter().any(|v| v.starts_with("TERMINAL")),
        "{first:?}"
    );
    assert!(r["plots"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "tx_amount.png"));
    assert!(dir.path().join("out/tx_amount.png").exists());
}

#[test]
fn doubled_night_share_alerts_on_the_night_flag() {
    let dir = tempfile::tempdir().unwrap();
    // Move 21 % of daytime transactions into the night of the same day:
    // the night share goes from 17.4 % to about 35 %.
    let csv = shifted_csv(dir.path(), |r| {
        let s = r.time_seconds.rem_euclid(86_400);
        if s >= 7 * 3600 && draw(r.transaction_id) < 0.2107 {
            let night = (s / 3600) % 7 * 3600 + s % 3600;
            r.time_seconds += night - s;
        }
    });
    let r = drift(&csv, FROM, TO, &dir.path().join("out"));
    assert_quiet_before_shift(&r);
    assert_eq!(delay(&r, "TX_DURING_NIGHT"), Some(1), "{:?}", raised(&r));
    let w8 = &r["windows"][8]["vars"];
    let night = w8
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "TX_DURING_NIGHT")
        .unwrap();
    assert!(
        (0.31..0.39).contains(&night["mean"].as_f64().unwrap()),
        "{night}"
    );
    assert!(
        !raised(&r).iter().any(|(_, v)| v == "TX_AMOUNT"),
        "{:?}",
        raised(&r)
    );
}

#[test]
fn compromised_terminal_wave_alerts_on_terminal_risk_and_flagged_rate() {
    let dir = tempfile::tempdir().unwrap();
    // 200 more terminals compromised for 28 days from the shift on
    // (scenario 2): every transaction there is a fraud.
    let start = day_index(SHIFT_DAY).unwrap();
    let csv = shifted_csv(dir.path(), |r| {
        if r.terminal_id % 50 == 7 && r.time_days < start + 28 {
            r.fraud = 1;
            r.scenario = 2;
        }
    });
    let r = drift(&csv, FROM, TO, &dir.path().join("out"));
    assert_quiet_before_shift(&r);
    let alerts = raised(&r);
    // Labels arrive a week late: the terminal features move from the 8th day on.
    let risk = delay(&r, "TERMINAL_ID_RISK_1DAY_WINDOW")
        .or_else(|| delay(&r, "TERMINAL_ID_RISK_7DAY_WINDOW"))
        .expect("terminal risk alert");
    assert!((7..=9).contains(&risk), "{alerts:?}");
    let flagged = delay(&r, "FLAGGED").expect("flagged-rate alert");
    assert!((7..=9).contains(&flagged), "{alerts:?}");
    assert!(
        !alerts
            .iter()
            .any(|(_, v)| v == "TX_AMOUNT" || v.starts_with("CUSTOMER")),
        "{alerts:?}"
    );
}
