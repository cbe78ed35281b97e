use super::*;

fn tx() -> Transaction {
    Transaction {
        transaction_id: "42".into(),
        event_time: 1_522_540_831_000,
        customer_id: "596".into(),
        terminal_id: "3156".into(),
        amount: 57.16,
        currency: "EUR".into(),
    }
}

const V3: &str = r#"{"type":"record","name":"Transaction","namespace":"riskstream","fields":[
 {"name":"transaction_id","type":"string"},
 {"name":"event_time","type":{"type":"long","logicalType":"timestamp-millis"}},
 {"name":"customer_id","type":"string"},
 {"name":"terminal_id","type":"string"},
 {"name":"amount","type":"double"},
 {"name":"currency","type":"string","default":"EUR"},
 {"name":"channel","type":"string","default":"pos"}]}"#;

#[test]
fn round_trips_a_transaction_with_single_object_framing() {
    let c = Codec::new().unwrap();
    let bytes = c.encode_transaction(&tx()).unwrap();
    assert_eq!(&bytes[..2], &SINGLE_OBJECT_MAGIC);
    assert_eq!(
        &bytes[2..10],
        &c.transaction_schema().fingerprint.to_le_bytes()
    );
    let back = c.decode_transaction(Some(b"596"), Some(&bytes)).unwrap();
    assert_eq!(back, tx());
}

#[test]
fn fingerprint_matches_the_avro_spec_crc64() {
    // CRC-64-AVRO of the canonical form of "int" is given in the spec's
    // reference implementation: 0x7275d51a3f395c8f.
    let k = KnownSchema::parse(r#""int""#, "int").unwrap();
    assert_eq!(k.fingerprint, 0x7275_d51a_3f39_5c8f);
}

#[test]
fn older_writer_without_currency_decodes_with_the_default() {
    let c = Codec::new().unwrap();
    let v1 = KnownSchema::parse(HISTORY_SCHEMAS[0], "v1").unwrap();
    let bytes = c.encode_transaction_as(&v1, &tx(), vec![]).unwrap();
    assert_ne!(v1.fingerprint, c.transaction_schema().fingerprint);
    let back = c.decode_transaction(Some(b"596"), Some(&bytes)).unwrap();
    assert_eq!(back.currency, "EUR");
    assert_eq!(back.amount, 57.16);
}

#[test]
fn newer_writer_with_an_added_field_decodes_once_registered() {
    let mut c = Codec::new().unwrap();
    let v3 = KnownSchema::parse(V3, "v3").unwrap();
    let mut t = tx();
    t.currency = "USD".into();
    let bytes = c
        .encode_transaction_as(&v3, &t, vec![("channel", Value::String("web".into()))])
        .unwrap();
    assert_eq!(
        c.decode_transaction(Some(b"596"), Some(&bytes)),
        Err(DecodeError::UnknownFingerprint(v3.fingerprint))
    );
    c.add_writer_schema(V3, "v3").unwrap();
    let back = c.decode_transaction(Some(b"596"), Some(&bytes)).unwrap();
    assert_eq!(back, t);
}

#[test]
fn rejects_poison_records_with_a_reason() {
    let c = Codec::new().unwrap();
    let good = c.encode_transaction(&tx()).unwrap();
    type Case<'a> = (Option<&'a [u8]>, Vec<u8>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            Some(b"596"),
            b"garbage bytes here".to_vec(),
            "not_single_object",
        ),
        (
            Some(b"596"),
            good[..good.len() - 4].to_vec(),
            "malformed_avro",
        ),
        (Some(b"596"), vec![0xC3, 0x01, 1, 2, 3], "not_single_object"),
        (
            Some(b"596"),
            [&[0xC3, 0x01, 9, 9, 9, 9, 9, 9, 9, 9][..], &good[10..]].concat(),
            "unknown_fingerprint",
        ),
        (None, good.clone(), "missing_key"),
        (Some(b"597"), good.clone(), "invalid_field"),
        (
            Some(b"596"),
            [&good[..], &[0u8][..]].concat(),
            "malformed_avro",
        ),
    ];
    for (key, bytes, reason) in cases {
        let err = c.decode_transaction(key, Some(&bytes)).unwrap_err();
        assert_eq!(err.reason(), reason, "{err}");
    }
    for amount in [f64::NAN, -1.0, f64::INFINITY] {
        let mut t = tx();
        t.amount = amount;
        let bytes = c.encode_transaction(&t).unwrap();
        let err = c
            .decode_transaction(Some(b"596"), Some(&bytes))
            .unwrap_err();
        assert_eq!(err.reason(), "invalid_amount");
        assert!(err.to_string().contains("amount"), "{err}");
    }
}

/// The stage tells a record refused at its framing (the decoder proper never
/// saw it) from one whose datum was read (tests/fuzz_decoders.rs counts
/// how many generated inputs get that far).
#[test]
fn a_decode_error_says_whether_the_framing_or_the_datum_failed() {
    let c = Codec::new().unwrap();
    let good = c.encode_transaction(&tx()).unwrap();
    let label = FraudLabel {
        transaction_id: "42".into(),
        customer_id: "596".into(),
        terminal_id: "3156".into(),
        event_time: 1,
        is_fraud: false,
        reported_at: 2,
    };
    let label = c.encode_label(&label).unwrap();
    let mut nan = tx();
    nan.amount = f64::NAN;
    let nan = c.encode_transaction(&nan).unwrap();
    let bad_fingerprint = [&good[..2], &[9u8; 8][..], &good[HEADER_LEN..]].concat();
    type Case<'a> = (Option<&'a [u8]>, Vec<u8>, DecodeStage);
    let cases: Vec<Case<'_>> = vec![
        (Some(b"596"), vec![], DecodeStage::Framing),
        (
            Some(b"596"),
            b"garbage bytes here".to_vec(),
            DecodeStage::Framing,
        ),
        (
            Some(b"596"),
            good[..HEADER_LEN - 1].to_vec(),
            DecodeStage::Framing,
        ),
        (Some(b"596"), bad_fingerprint, DecodeStage::Framing),
        (Some(b"596"), vec![0, 0, 0, 0, 1, 2], DecodeStage::Framing),
        (Some(b"596"), label, DecodeStage::Framing),
        (
            Some(b"596"),
            good[..good.len() - 1].to_vec(),
            DecodeStage::Datum,
        ),
        (
            Some(b"596"),
            [&good[..], &[0][..]].concat(),
            DecodeStage::Datum,
        ),
        (Some(b"597"), good.clone(), DecodeStage::Datum),
        (None, good.clone(), DecodeStage::Datum),
        (Some(b"596"), nan, DecodeStage::Datum),
    ];
    for (key, bytes, stage) in cases {
        let err = c.decode_transaction(key, Some(&bytes)).unwrap_err();
        assert_eq!(err.stage(), stage, "{err} ({bytes:02x?})");
    }
    assert_eq!(c.decode_transaction(Some(b"596"), Some(&good)), Ok(tx()));
}

#[test]
fn scored_and_label_records_round_trip_and_render_as_json() {
    let c = Codec::new().unwrap();
    let s = ScoredTransaction {
        transaction_id: "1".into(),
        event_time: 5,
        customer_id: "2".into(),
        terminal_id: "3".into(),
        amount: 4.5,
        currency: "EUR".into(),
        score: 0.25,
        is_fraud: false,
        threshold: 0.5,
        model_name: "m".into(),
        model_version: "1".into(),
        scored_at: 6,
    };
    let b = c.encode_scored(&s).unwrap();
    assert_eq!(c.decode_scored(Some(&b)).unwrap(), s);
    // The hand-written encoder equals the generic one, byte for byte,
    // also for long strings, negative times and non-ASCII text.
    assert_eq!(b, c.encode_scored_generic(&s).unwrap());
    let mut odd = s.clone();
    odd.transaction_id = "x".repeat(300);
    odd.event_time = -1_234_567_890_123;
    odd.customer_id = "kündin-€".into();
    odd.is_fraud = true;
    odd.scored_at = i64::MAX;
    assert_eq!(
        c.encode_scored(&odd).unwrap(),
        c.encode_scored_generic(&odd).unwrap()
    );
    assert_eq!(
        c.decode_scored(Some(&c.encode_scored(&odd).unwrap()))
            .unwrap(),
        odd
    );
    let j = c.to_json(&b).unwrap();
    assert_eq!(j["score"], serde_json::json!(0.25));
    assert_eq!(j["model_version"], serde_json::json!("1"));
    let l = FraudLabel {
        transaction_id: "1".into(),
        customer_id: "2".into(),
        terminal_id: "3".into(),
        event_time: 10,
        is_fraud: true,
        reported_at: 20,
    };
    let b = c.encode_label(&l).unwrap();
    assert_eq!(c.decode_label(Some(&b)).unwrap(), l);
    // A label is not a transaction.
    assert_eq!(
        c.decode_transaction(Some(b"2"), Some(&b))
            .unwrap_err()
            .reason(),
        "wrong_schema"
    );
}

#[test]
fn hand_written_decoder_matches_the_generic_one_and_never_panics() {
    let c = Codec::new().unwrap();
    let mut cases = vec![tx()];
    for i in 0..200i64 {
        cases.push(Transaction {
            transaction_id: format!("{}", i * 7919),
            event_time: i * 1_000_003 - 50_000,
            customer_id: "é".repeat((i % 5) as usize) + &i.to_string(),
            terminal_id: String::new(),
            amount: (i as f64) * 3.7 - 100.0,
            currency: "EUR".into(),
        });
    }
    for t in &cases {
        let bytes = c.encode_transaction(t).unwrap();
        let fast = decode_transaction_datum(&bytes[HEADER_LEN..]).unwrap();
        let slow = decode_transaction_generic(&c, &bytes).unwrap();
        assert_eq!(fast, slow);
        assert_eq!(&fast, t);
        // Every truncation and a trailing byte are errors, not panics.
        for n in 0..bytes.len() - HEADER_LEN {
            assert!(decode_transaction_datum(&bytes[HEADER_LEN..HEADER_LEN + n]).is_err());
        }
        let mut longer = bytes[HEADER_LEN..].to_vec();
        longer.push(0);
        assert!(decode_transaction_datum(&longer).is_err());
    }
    // Garbage lengths and invalid UTF-8.
    assert!(decode_transaction_datum(&[0x01]).is_err());
    assert!(decode_transaction_datum(&[0xff; 12]).is_err());
    assert!(decode_transaction_datum(&[0x04, 0xff, 0xfe]).is_err());
}

#[test]
fn hand_written_label_decoder_matches_the_generic_one() {
    let c = Codec::new().unwrap();
    for i in 0..100i64 {
        let l = FraudLabel {
            transaction_id: i.to_string(),
            customer_id: format!("c{i}"),
            terminal_id: "ü".repeat((i % 3) as usize),
            event_time: i * 86_400_000 - 7,
            is_fraud: i % 2 == 0,
            reported_at: i * 86_400_000 + 604_800_000,
        };
        let bytes = c.encode_label(&l).unwrap();
        assert_eq!(decode_label_datum(&bytes[HEADER_LEN..]).unwrap(), l);
        assert_eq!(c.decode_label(Some(&bytes)).unwrap(), l);
        for n in 0..bytes.len() - HEADER_LEN {
            assert!(decode_label_datum(&bytes[HEADER_LEN..HEADER_LEN + n]).is_err());
        }
    }
    // A boolean byte other than 0/1 is malformed.
    let mut bad = c
        .encode_label(&FraudLabel {
            transaction_id: "1".into(),
            customer_id: "2".into(),
            terminal_id: "3".into(),
            event_time: 4,
            is_fraud: true,
            reported_at: 5,
        })
        .unwrap();
    let pos = HEADER_LEN + 6 + 1;
    assert_eq!(bad[pos], 1);
    bad[pos] = 2;
    assert!(c.decode_label(Some(&bad)).is_err());
}

/// What fastavro (another Avro implementation) says about our schemas:
/// `tests/fixtures/avro/fastavro.json`, made by `scripts/avro_fixtures.py`.
fn fastavro_fixture() -> serde_json::Value {
    serde_json::from_str(include_str!("../../../tests/fixtures/avro/fastavro.json")).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn canonical_forms_and_fingerprints_equal_fastavros() {
    let fx = fastavro_fixture();
    let schemas = fx["schemas"].as_array().unwrap();
    assert_eq!(schemas.len(), 9);
    for s in schemas {
        let file = s["file"].as_str().unwrap();
        let text =
            std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert_eq!(
            canonical::canonical_form(&text).unwrap(),
            s["canonical"].as_str().unwrap(),
            "{file}"
        );
        let k = KnownSchema::parse(&text, file).unwrap();
        let le: String = k
            .fingerprint
            .to_le_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(le, s["fingerprint"].as_str().unwrap(), "{file}");
    }
    // The issue's example: fastavro's Transaction fingerprint.
    let c = Codec::new().unwrap();
    assert_eq!(
        c.transaction_schema().fingerprint.to_le_bytes(),
        [0xbb, 0x1b, 0x8f, 0xd7, 0x2b, 0x18, 0xe0, 0xa4]
    );
}

#[test]
fn records_written_by_fastavro_decode_and_ours_are_byte_identical() {
    let fx = fastavro_fixture();
    let c = Codec::new().unwrap();
    let mut checked = 0;
    for s in fx["schemas"].as_array().unwrap() {
        for r in s["records"].as_array().unwrap() {
            let bytes = unhex(r["single_object"].as_str().unwrap());
            let v = &r["value"];
            let str_of = |k: &str| v[k].as_str().unwrap().to_string();
            match s["file"].as_str().unwrap() {
                "schemas/transaction.avsc" => {
                    let t = Transaction {
                        transaction_id: str_of("transaction_id"),
                        event_time: v["event_time"].as_i64().unwrap(),
                        customer_id: str_of("customer_id"),
                        terminal_id: str_of("terminal_id"),
                        amount: v["amount"].as_f64().unwrap(),
                        currency: str_of("currency"),
                    };
                    // The generic path validates; decode_transaction also
                    // checks business rules, which these records meet
                    // except the empty currency (allowed).
                    let back = c
                        .decode_transaction(Some(t.customer_id.as_bytes()), Some(&bytes))
                        .unwrap();
                    assert_eq!(back, t);
                    assert_eq!(c.encode_transaction(&t).unwrap(), bytes);
                }
                "schemas/fraud_label.avsc" => {
                    let l = FraudLabel {
                        transaction_id: str_of("transaction_id"),
                        customer_id: str_of("customer_id"),
                        terminal_id: str_of("terminal_id"),
                        event_time: v["event_time"].as_i64().unwrap(),
                        is_fraud: v["is_fraud"].as_bool().unwrap(),
                        reported_at: v["reported_at"].as_i64().unwrap(),
                    };
                    assert_eq!(c.decode_label(Some(&bytes)).unwrap(), l);
                    assert_eq!(c.encode_label(&l).unwrap(), bytes);
                }
                "schemas/scored_transaction.avsc" => {
                    let s = ScoredTransaction {
                        transaction_id: str_of("transaction_id"),
                        event_time: v["event_time"].as_i64().unwrap(),
                        customer_id: str_of("customer_id"),
                        terminal_id: str_of("terminal_id"),
                        amount: v["amount"].as_f64().unwrap(),
                        currency: str_of("currency"),
                        score: v["score"].as_f64().unwrap() as f32,
                        is_fraud: v["is_fraud"].as_bool().unwrap(),
                        threshold: v["threshold"].as_f64().unwrap() as f32,
                        model_name: str_of("model_name"),
                        model_version: str_of("model_version"),
                        scored_at: v["scored_at"].as_i64().unwrap(),
                    };
                    assert_eq!(c.decode_scored(Some(&bytes)).unwrap(), s);
                    assert_eq!(c.encode_scored(&s).unwrap(), bytes);
                    assert_eq!(c.encode_scored_generic(&s).unwrap(), bytes);
                }
                other => panic!("no sample expected for {other}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 5);
}

#[test]
fn records_with_the_legacy_fingerprint_still_decode_and_are_counted() {
    let mut c = Codec::new().unwrap();
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
    c.attach_metrics(metrics.clone());
    let k = c.transaction_schema().clone();
    assert_ne!(
        k.legacy_fingerprint, k.fingerprint,
        "timestamp-millis made them differ"
    );
    // riskstream 0.1 wrote 1277ba16157f9bb2 (the issue's example).
    let legacy_hex: String = k
        .legacy_fingerprint
        .to_le_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(legacy_hex, "1277ba16157f9bb2");
    let mut bytes = c.encode_transaction(&tx()).unwrap();
    bytes[2..10].copy_from_slice(&k.legacy_fingerprint.to_le_bytes());
    for _ in 0..3 {
        assert_eq!(
            c.decode_transaction(Some(b"596"), Some(&bytes)).unwrap(),
            tx()
        );
    }
    assert!(metrics
        .render()
        .contains("riskstream_legacy_fingerprint_records_total 3\n"));
    // Outputs carry the specification's fingerprint only.
    let out = c.encode_transaction(&tx()).unwrap();
    assert_eq!(&out[2..10], &k.fingerprint.to_le_bytes());
}
