//! One benchmark per pipeline stage: Avro decode/encode, feature computation
//! with handbook-sized state, inference per batch size (CPU backend, and
//! wgpu when built with `--features wgpu` and an adapter exists), and the
//! cost of moving records through a bounded queue into batches, and the
//! drift sidecar's cost per record.
//!
//! `cargo bench --bench stages`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use riskstream::codec::{Codec, ScoredTransaction, Transaction};
use riskstream::config::DeviceChoice;
use riskstream::features::{FeatureEngine, LabelRef, TxRef, DAY_MS, N_FEATURES};
use riskstream::model::{choose_device, Scorer};

fn tx(i: u64) -> Transaction {
    Transaction {
        transaction_id: i.to_string(),
        event_time: 1_530_000_000_000 + i as i64 * 1000,
        customer_id: (i % 5000).to_string(),
        terminal_id: (i % 10_000).to_string(),
        amount: 12.5 + (i % 100) as f64,
        currency: "EUR".into(),
    }
}

fn codec(c: &mut Criterion) {
    let codec = Codec::new().unwrap();
    let t = tx(42);
    let bytes = codec.encode_transaction(&t).unwrap();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_transaction", |b| {
        b.iter(|| {
            codec
                .decode_transaction(Some(b"42"), Some(black_box(&bytes)))
                .unwrap()
        })
    });
    let s = ScoredTransaction {
        transaction_id: t.transaction_id.clone(),
        event_time: t.event_time,
        customer_id: t.customer_id.clone(),
        terminal_id: t.terminal_id.clone(),
        amount: t.amount,
        currency: t.currency.clone(),
        score: 0.1,
        is_fraud: false,
        threshold: 0.5,
        model_name: "fraud-mlp".into(),
        model_version: "1".into(),
        scored_at: 1,
    };
    g.bench_function("encode_scored", |b| {
        b.iter(|| codec.encode_scored(black_box(&s)).unwrap())
    });
    g.finish();
}

/// 5,000 customers, 10,000 terminals, 30 days at ~2 transactions per
/// customer-day, labels for all of them: the handbook's state size.
fn features(c: &mut Criterion) {
    let mut e = FeatureEngine::new();
    let n = 5000 * 2 * 30;
    let t0 = 1_530_000_000_000i64;
    let step = 30 * DAY_MS / n as i64;
    let ids: Vec<(String, String, String)> = (0..n as u64)
        .map(|i| {
            (
                i.to_string(),
                (i % 5000).to_string(),
                ((i * 7919) % 10_000).to_string(),
            )
        })
        .collect();
    for (i, (id, c_, m)) in ids.iter().enumerate() {
        let t = t0 + i as i64 * step;
        e.observe_transaction(TxRef {
            transaction_id: id,
            event_time: t,
            customer_id: c_,
            terminal_id: m,
            amount: 50.0,
        });
        e.observe_label(LabelRef {
            transaction_id: id,
            terminal_id: m,
            event_time: t,
            is_fraud: i % 100 == 0,
        });
    }
    let mut i = n as u64;
    let mut g = c.benchmark_group("features");
    g.throughput(Throughput::Elements(1));
    g.bench_function("observe_transaction_handbook_state", |b| {
        b.iter(|| {
            i += 1;
            let id = i.to_string();
            let cu = (i % 5000).to_string();
            let m = ((i * 7919) % 10_000).to_string();
            black_box(e.observe_transaction(TxRef {
                transaction_id: &id,
                event_time: t0 + i as i64 * step,
                customer_id: &cu,
                terminal_id: &m,
                amount: 42.0,
            }))
        })
    });
    g.finish();
}

/// The model registry: `RISKSTREAM_MODELS_DIR` (a bench binary run on
/// another machine), else the checkout it was built from.
fn models_dir() -> std::path::PathBuf {
    std::env::var_os("RISKSTREAM_MODELS_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models"),
        std::path::PathBuf::from,
    )
}

fn inference_on(c: &mut Criterion, choice: DeviceChoice, name: &str) {
    let Ok(device) = choose_device(choice) else {
        eprintln!("{name}: no such device here; skipped");
        return;
    };
    let root = models_dir();
    let loc = riskstream::registry::resolve(&root, "fraud-mlp@champion").unwrap();
    let mut scorer = Scorer::load(&loc, device).unwrap();
    scorer.warm_up(65_536).unwrap();
    let mut g = c.benchmark_group(format!("inference/{}", scorer.device_description()));
    g.measurement_time(Duration::from_secs(3));
    // 1…4,096 as the worker batches; 16,384 and 65,536 show where a GPU's
    // throughput levels off (offline scoring sizes).
    for bs in [1usize, 16, 64, 256, 1024, 4096, 16_384, 65_536] {
        let rows = vec![[1.0f64; N_FEATURES]; bs];
        g.throughput(Throughput::Elements(bs as u64));
        g.bench_with_input(BenchmarkId::from_parameter(bs), &rows, |b, rows| {
            b.iter(|| scorer.score(black_box(rows)).unwrap())
        });
    }
    g.finish();
}

fn inference(c: &mut Criterion) {
    inference_on(c, DeviceChoice::Cpu, "cpu");
    if cfg!(feature = "wgpu") {
        inference_on(c, DeviceChoice::Wgpu, "wgpu");
    }
}

/// The batcher's own cost: records through a bounded queue into batches of 512.
fn batcher(c: &mut Criterion) {
    let mut g = c.benchmark_group("batcher");
    g.throughput(Throughput::Elements(512));
    g.bench_function("queue_512_records_into_a_batch", |b| {
        let (txq, rxq) = std::sync::mpsc::sync_channel::<Transaction>(8192);
        let items: Vec<Transaction> = (0..512).map(tx).collect();
        b.iter(|| {
            for t in &items {
                txq.send(t.clone()).unwrap();
            }
            let mut batch = Vec::with_capacity(512);
            while let Ok(t) = rxq.try_recv() {
                batch.push(t);
            }
            black_box(batch)
        })
    });
    g.finish();
}

/// The drift sidecar's cost per record: 10,000 records over about three
/// event-time hours from 8 partitions (so twelve quarter-hourly evaluations of every
/// scale: the 18 model inputs, the score and the flagged rate against the
/// shipped reference).
fn drift(c: &mut Criterion) {
    use riskstream::drift::{DriftMonitor, DriftSettings, Reference};
    let dir = models_dir().join("fraud-mlp/1");
    let reference = Reference::read(&dir).expect("reference");
    let card = riskstream::model::ModelCard::read(&dir).expect("card");
    let rows: Vec<[f64; N_FEATURES]> = (0..10_000)
        .map(|i| {
            let x = f64::from(i);
            std::array::from_fn(|j| (x * 0.37 + j as f64).sin().abs() * 50.0)
        })
        .collect();
    let mut g = c.benchmark_group("drift");
    g.throughput(Throughput::Elements(10_000));
    g.sample_size(20);
    g.bench_function("three_hours_of_10000_records_per_record", |b| {
        let mut m = DriftMonitor::new(&reference, &card.inputs, DriftSettings::default()).unwrap();
        // Every window's history there (a worker past its warm-up).
        m.set_history(riskstream::features::History {
            customers: Some(i64::MIN),
            labels: Some(i64::MIN),
        });
        let mut t = 1_530_403_200_000i64;
        let mut out = Vec::new();
        b.iter(|| {
            out.clear();
            for (i, r) in rows.iter().enumerate() {
                t += 1080;
                m.push(r, 0.01, false, t, (i % 8) as i32, &mut out);
            }
            assert!((10..=14).contains(&out.len()), "{}", out.len());
            black_box(out.len())
        })
    });
    g.finish();
}

/// Realised performance's cost per record: each decision's transaction-id
/// fingerprint (scoring thread), kept in the store, then joined with its
/// label (sidecar); 10,000 records a batch, labels a batch later.
fn performance(c: &mut Criterion) {
    use riskstream::drift::performance::{
        tx_fingerprint, Decision, LabelKey, PerformanceMonitor, PerformanceSettings, Validation,
        VersionInfo,
    };
    let versions = [VersionInfo {
        model: "fraud-mlp/1".into(),
        validation: Validation::default(),
    }];
    let ids: Vec<String> = (0..10_000u64)
        .map(|i| (1_000_000 + i).to_string())
        .collect();
    let mut g = c.benchmark_group("drift");
    g.throughput(Throughput::Elements(10_000));
    g.sample_size(20);
    g.bench_function("performance_join_of_10000_decisions_per_record", |b| {
        let mut m = PerformanceMonitor::new(PerformanceSettings::default());
        let mut t = 1_530_403_200_000i64;
        let mut out = Vec::new();
        let mut pending: Vec<LabelKey> = Vec::new();
        b.iter(|| {
            let mut ds = Vec::with_capacity(ids.len());
            for (i, id) in ids.iter().enumerate() {
                t += 1080;
                ds.push(Decision {
                    tx: tx_fingerprint(id) ^ t as u64,
                    event_time: t,
                    score: (i % 100) as f32 / 100.0,
                    flagged: i % 100 > 90,
                    version: 0,
                });
            }
            m.decisions(&ds, &versions, Some(t), &mut out);
            m.labels(&pending, &mut out);
            pending = ds
                .iter()
                .map(|d| LabelKey {
                    tx: d.tx,
                    event_time: d.event_time,
                    fraud: d.flagged,
                })
                .collect();
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    codec,
    features,
    inference,
    batcher,
    drift,
    performance
);
criterion_main!(benches);
