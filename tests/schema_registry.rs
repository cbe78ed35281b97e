//! Confluent Schema Registry framing. No Confluent-compatible registry
//! server can be installed on these machines, so the tests run against a
//! small HTTP stand-in (below) that follows the registry's REST contract for
//! the calls riskstream makes: `POST /subjects/{subject}/versions` →
//! `{"id": N}` (the same schema gets the same id under every subject) and
//! `GET /schemas/ids/{id}` → `{"schema": "..."}`, 404 with error code 40403
//! for an unknown id.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use riskstream::codec::{Codec, DecodeError, Written};

#[derive(Default)]
struct Registry {
    schemas: Vec<String>,
    subjects: HashMap<String, u32>,
    gets: usize,
}

/// Starts the stand-in; returns its URL and state.
fn stand_in() -> (String, Arc<Mutex<Registry>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(Mutex::new(Registry::default()));
    let st = state.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut len = 0;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let parts: Vec<&str> = line.split_whitespace().collect();
            let (method, path) = (parts[0], parts[1]);
            let mut s = st.lock().unwrap();
            let (status, resp) = if method == "POST"
                && path.starts_with("/subjects/")
                && path.ends_with("/versions")
            {
                let subject = path["/subjects/".len()..path.len() - "/versions".len()].to_string();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let schema = v["schema"].as_str().unwrap().to_string();
                let id = match s.schemas.iter().position(|x| *x == schema) {
                    Some(i) => i as u32 + 1,
                    None => {
                        s.schemas.push(schema);
                        s.schemas.len() as u32
                    }
                };
                s.subjects.insert(subject, id);
                (200, serde_json::json!({ "id": id }).to_string())
            } else if let Some(id) = path.strip_prefix("/schemas/ids/") {
                s.gets += 1;
                match id
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| s.schemas.get(i.wrapping_sub(1)))
                {
                    Some(schema) => (200, serde_json::json!({ "schema": schema }).to_string()),
                    None => (
                        404,
                        r#"{"error_code":40403,"message":"Schema not found"}"#.to_string(),
                    ),
                }
            } else {
                (
                    404,
                    r#"{"error_code":404,"message":"HTTP 404 Not Found"}"#.to_string(),
                )
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{resp}",
                resp.len()
            );
        }
    });
    (url, state)
}

fn sample(n: usize) -> Vec<riskstream::codec::Transaction> {
    rows(100, n).iter().map(|r| r.transaction()).collect()
}

#[test]
fn confluent_framing_round_trips_through_the_registry() {
    let (url, state) = stand_in();
    let mut writer = Codec::new().unwrap();
    writer.connect_registry(&url).unwrap();
    let id = writer
        .register_output(Written::Transaction, "payments")
        .unwrap();
    assert_eq!(
        state.lock().unwrap().subjects.get("payments-value"),
        Some(&id)
    );
    let txs = sample(100);
    let mut reader = Codec::new().unwrap();
    reader.connect_registry(&url).unwrap();
    for tx in &txs {
        let bytes = writer.encode_transaction(tx).unwrap();
        assert_eq!(bytes[0], 0);
        assert_eq!(
            u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]),
            id
        );
        let back = reader
            .decode_transaction(Some(tx.customer_id.as_bytes()), Some(&bytes))
            .unwrap();
        assert_eq!(&back, tx);
    }
    // One lookup for 100 records: the schema is cached by id.
    assert_eq!(state.lock().unwrap().gets, 1);
    // Scored records too, under their own subject.
    let sid = writer
        .register_output(Written::Scored, "payments.scored")
        .unwrap();
    assert_ne!(sid, id);
    // Bad framing: unknown id, short header, no registry configured.
    let key = Some(txs[0].customer_id.as_bytes());
    let unknown = [0u8, 0, 0, 3, 231, 2, 0];
    let e = reader.decode_transaction(key, Some(&unknown)).unwrap_err();
    assert!(
        matches!(e, DecodeError::UnknownSchemaId { id: 999, .. }),
        "{e}"
    );
    assert_eq!(e.reason(), "unknown_schema_id");
    let e = reader
        .decode_transaction(key, Some(&[0u8, 0, 1]))
        .unwrap_err();
    assert!(e.to_string().contains("5-byte Confluent header"), "{e}");
    let bytes = writer.encode_transaction(&txs[0]).unwrap();
    let e = Codec::new()
        .unwrap()
        .decode_transaction(key, Some(&bytes))
        .unwrap_err();
    assert!(e.to_string().contains("--schema-registry-url"), "{e}");
    // A registry that is not there: a clear error at registration.
    let mut c = Codec::new().unwrap();
    c.connect_registry("http://127.0.0.1:9").unwrap();
    let e = c.register_output(Written::Scored, "x").unwrap_err();
    assert!(
        e.to_string().contains("schema registry http://127.0.0.1:9"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_reads_and_writes_confluent_framed_records() {
    let (url, state) = stand_in();
    let t = Topics::new("sr");
    t.create(4).await;
    let mut writer = Codec::new().unwrap();
    writer.connect_registry(&url).unwrap();
    writer
        .register_output(Written::Transaction, &t.input)
        .unwrap();
    let txs = sample(1000);
    let recs: Vec<_> = txs
        .iter()
        .map(|tx| {
            (
                Some(tx.customer_id.as_bytes().to_vec()),
                writer.encode_transaction(tx).unwrap(),
            )
        })
        .collect();
    produce_raw(&t.input, &recs).await;
    let w = Worker::start(&t, &["--schema-registry-url", &url]);
    let out = read_topic(&t.output, txs.len(), Duration::from_secs(60));
    assert_eq!(out.len(), txs.len(), "log:\n{}", w.log_text());
    let scored_id = *state
        .lock()
        .unwrap()
        .subjects
        .get(&format!("{}-value", t.output))
        .unwrap();
    let mut reader = Codec::new().unwrap();
    reader.connect_registry(&url).unwrap();
    for r in &out {
        let p = r.payload.as_deref().unwrap();
        assert_eq!(
            p[..5],
            [
                0,
                (scored_id >> 24) as u8,
                (scored_id >> 16) as u8,
                (scored_id >> 8) as u8,
                scored_id as u8
            ]
        );
        let s = reader.decode_scored(Some(p)).unwrap();
        assert_eq!(s.model_name, "fraud-mlp");
    }
    assert!(state
        .lock()
        .unwrap()
        .subjects
        .contains_key(&format!("{}-value", t.drift)));
    assert_eq!(read_topic(&t.dlq, 1, Duration::from_secs(2)).len(), 0);
}
