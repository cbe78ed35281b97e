use super::*;

fn tx<'a>(id: &'a str, t: i64, c: &'a str, m: &'a str, a: f64) -> TxRef<'a> {
    TxRef {
        transaction_id: id,
        event_time: t,
        customer_id: c,
        terminal_id: m,
        amount: a,
    }
}

#[test]
fn weekend_and_night_follow_utc() {
    // 2018-04-01 was a Sunday.
    let sunday = crate::dataset::EPOCH_2018_04_01_MS;
    assert!(is_weekend(sunday));
    assert!(!is_weekend(sunday + DAY_MS));
    assert!(is_night(sunday + 6 * 3_600_000 + 3_599_000));
    assert!(!is_night(sunday + 7 * 3_600_000));
}

#[test]
fn customer_windows_include_the_current_transaction() {
    let mut e = FeatureEngine::new();
    let t0 = 1_600_000_000_000;
    let f = e.observe_transaction(tx("a", t0, "c", "m", 10.0));
    assert_eq!((f[3], f[4]), (1.0, 10.0));
    let f = e.observe_transaction(tx("b", t0 + DAY_MS, "c", "m", 30.0));
    // The 1-day window (t - 1d, t] excludes a transaction exactly 1 day old.
    assert_eq!((f[3], f[4]), (1.0, 30.0));
    assert_eq!((f[5], f[6]), (2.0, 20.0));
}

#[test]
fn replaying_a_transaction_returns_the_same_features() {
    let mut e = FeatureEngine::new();
    let t0 = 1_600_000_000_000;
    let a = e.observe_transaction(tx("a", t0, "c", "m", 10.0));
    let b = e.observe_transaction(tx("b", t0 + 1000, "c", "m", 30.0));
    assert_eq!(e.observe_transaction(tx("a", t0, "c", "m", 10.0)), a);
    assert_eq!(e.observe_transaction(tx("b", t0 + 1000, "c", "m", 30.0)), b);
    assert_eq!(e.state_size().1, 2);
}

#[test]
fn terminal_risk_uses_only_labels_older_than_the_delay() {
    let mut e = FeatureEngine::new();
    let t = 1_600_000_000_000;
    let label = |id, days: i64, fraud| LabelRef {
        transaction_id: id,
        terminal_id: "m",
        event_time: t - days * DAY_MS,
        is_fraud: fraud,
    };
    e.observe_label(label("1", 8, true));
    e.observe_label(label("2", 10, false));
    e.observe_label(label("3", 3, true)); // inside the delay: not visible yet
    e.observe_label(label("3", 3, true)); // duplicates are ignored
    let f = e.observe_transaction(tx("x", t, "c", "m", 1.0));
    assert_eq!((f[9], f[10]), (0.0, 0.0)); // (t-8d, t-7d]: empty
    assert_eq!((f[11], f[12]), (2.0, 0.5));
    assert_eq!((f[13], f[14]), (2.0, 0.5));
}

#[test]
fn state_is_bounded_by_the_longest_window() {
    let mut e = FeatureEngine::new();
    let t0 = 1_600_000_000_000;
    for i in 0..100 {
        let id = format!("{i}");
        let c = format!("c{}", i % 10);
        e.observe_transaction(tx(&id, t0 + i * DAY_MS, &c, "m", 1.0));
    }
    e.sweep();
    let (customers, entries, _, _) = e.state_size();
    assert!(customers <= 10);
    assert!(entries <= 30, "{entries} entries kept");
}

#[test]
fn amount_deviation_features_use_only_earlier_transactions() {
    let mut e = FeatureEngine::new();
    let t0 = 1_600_000_000_000;
    for (i, a) in [10.0, 10.0, 10.0].iter().enumerate() {
        let id = format!("{i}");
        e.observe_transaction(tx(&id, t0 + i as i64 * 1000, "c", "m", *a));
    }
    let f = e.observe_transaction(tx("big", t0 + 5000, "c", "m", 100.0));
    assert_eq!(f[15], 10.0, "ratio to the earlier mean");
    assert_eq!(f[17], 10.0, "ratio to the earlier max");
    assert_eq!(f[18], 1.0, "the current high amount counts");
    let g = e.observe_transaction(tx("after", t0 + DAY_MS, "c", "m", 10.0));
    assert_eq!(g[18], 1.0, "still within 14 days");
    let h = e.observe_transaction(tx("later", t0 + 15 * DAY_MS, "c", "m", 10.0));
    assert_eq!(h[18], 0.0, "out of the 14-day window");
    // Replaying the big one gives the same vector.
    assert_eq!(
        e.observe_transaction(tx("big", t0 + 5000, "c", "m", 100.0)),
        f
    );
}

#[test]
fn a_clock_limit_keeps_history_a_lagging_partition_still_needs() {
    let day = DAY_MS;
    let tx = |id: &str, c: &str, t: i64| (id.to_string(), c.to_string(), t);
    let run = |limit: Option<i64>| {
        let mut e = FeatureEngine::new();
        // Customer "slow" (a lagging partition) on day 0, then customer
        // "fast" (another partition) 40 days later, then "slow" on day 1.
        for (id, c, t) in [tx("1", "slow", 0), tx("2", "fast", 40 * day)] {
            e.observe_transaction(TxRef {
                transaction_id: &id,
                event_time: t,
                customer_id: &c,
                terminal_id: "t",
                amount: 10.0,
            });
        }
        if let Some(l) = limit {
            e.set_clock_limit(l);
        }
        e.sweep();
        e.observe_transaction(TxRef {
            transaction_id: "3",
            event_time: day,
            customer_id: "slow",
            terminal_id: "t",
            amount: 30.0,
        })
    };
    // NB_TX_7DAY (index 5) of the day-1 transaction: 2 with the day-0 one kept.
    assert_eq!(run(Some(0))[5], 2.0);
    // Without the cap the sweep measured from the fast partition drops it.
    assert_eq!(run(None)[5], 1.0);
}

#[test]
fn an_unbounded_clock_limit_evicts_nothing() {
    let mut e = FeatureEngine::new();
    e.observe_transaction(tx("a", 0, "c", "m", 1.0));
    e.observe_transaction(tx("b", 90 * DAY_MS, "d", "m", 1.0));
    e.set_clock_limit(i64::MIN);
    e.sweep();
    assert_eq!(e.state_size().0, 2, "both customers kept");
}

#[test]
fn the_history_a_feature_reads_is_covered_only_once_the_state_reaches_back_that_far() {
    let day = DAY_MS;
    assert_eq!(lookback("TX_AMOUNT"), Lookback::default());
    assert_eq!(
        lookback("CUSTOMER_ID_NB_TX_7DAY_WINDOW").customers_ms,
        7 * day
    );
    assert_eq!(
        lookback("CUSTOMER_ID_NB_HIGH_AMOUNT_14DAY").customers_ms,
        44 * day
    );
    assert_eq!(
        lookback("TERMINAL_ID_RISK_30DAY_WINDOW").labels_ms,
        37 * day
    );
    // Every feature but the calendar ones reads some history.
    for name in FEATURE_NAMES {
        let none = matches!(name, "TX_AMOUNT" | "TX_DURING_WEEKEND" | "TX_DURING_NIGHT");
        assert_eq!(lookback(name) == Lookback::default(), none, "{name}");
    }
    let all = Lookback::of_all(FEATURE_NAMES.iter().copied());
    assert_eq!((all.customers_ms, all.labels_ms), (44 * day, 37 * day));

    // A cold start at t0: transactions from t0, labels from t0 + 1 day.
    let t0 = 1_530_403_200_000i64;
    let mut engine = FeatureEngine::new();
    assert_eq!(engine.history(), History::default());
    let (c, l) = (
        lookback("CUSTOMER_ID_NB_TX_30DAY_WINDOW"),
        lookback("TERMINAL_ID_NB_TX_1DAY_WINDOW"),
    );
    assert!(
        !engine.history().covers(c, t0 + 40 * day),
        "nothing seen yet"
    );
    assert!(engine.history().covers(Lookback::default(), t0));
    let tx = |t: i64, id: &'static str| TxRef {
        transaction_id: id,
        event_time: t,
        customer_id: "c1",
        terminal_id: "t1",
        amount: 10.0,
    };
    engine.observe_transaction(tx(t0, "a"));
    engine.observe_transaction(tx(t0 + 5 * day, "b"));
    engine.observe_label(LabelRef {
        transaction_id: "a",
        terminal_id: "t1",
        event_time: t0 + day,
        is_fraud: false,
    });
    let h = engine.history();
    assert_eq!((h.customers, h.labels), (Some(t0), Some(t0 + day)));
    assert!(!h.covers(c, t0 + 30 * day - 1));
    assert!(h.covers(c, t0 + 30 * day));
    assert!(!h.covers(l, t0 + 9 * day - 1));
    assert!(h.covers(l, t0 + 9 * day));
    // A restore that brings back older history moves the horizon back.
    engine.restore_customer(
        0,
        "c2",
        &[CustomerTx {
            time: t0 - 20 * day,
            amount: 5.0,
            id: 7,
            high: false,
        }],
    );
    assert!(engine.history().covers(c, t0 + 10 * day));
}
