//! Confluent Schema Registry framing and the registry client. Most tests run
//! against a small HTTP(S) stand-in (below) that follows the registry's REST
//! contract for the calls riskstream makes:
//! `POST /subjects/{subject}/versions` with
//! `Content-Type: application/vnd.schemaregistry.v1+json` and
//! `{"schema": "..."}` → `{"id": N}` (the same schema gets the same id under
//! every subject), `GET /schemas/ids/{id}` → `{"schema": "..."}`, errors as
//! `{"error_code": N, "message": "..."}` (404 with 40403 for an unknown id,
//! 401 without the expected basic auth, 415 for another media type).
//! It can also play an outage (every answer one status) and answer chosen
//! ids with hostile bodies.
//!
//! The end-to-end tests (framing round trip, the worker reading and writing
//! framed records) also run against a real registry: Apicurio Registry's
//! Confluent API (`scripts/registry.sh start`, then
//! `export RISKSTREAM_TEST_REGISTRY_URL=$(scripts/registry.sh url)`). The
//! `apicurio` tests fail without that variable. Apicurio is shared by the
//! whole run, so those tests use subjects of their own ([`unique`]).
//!
//! The worker tests at the end need the broker (`RISKSTREAM_TEST_BROKERS`).
//! They and the `apicurio` tests are tier 2 (built with the
//! `external-tests` feature, docs/testing.md); the rest is tier 1.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use proptest::prelude::*;
use riskstream::codec::registry::{
    parse_register_response, parse_registry_schema, parse_schema_response, BasicAuth,
    RegistryOptions, ResponseLimits, SchemaRegistry, SchemaRegistryError,
};
use riskstream::codec::{Codec, DecodeError, Written, TRANSACTION_SCHEMA};

/// A hostile answer to `GET /schemas/ids/{id}`.
enum Raw {
    /// This body, with its Content-Length, status 200.
    Body(Vec<u8>),
    /// `{"schema": "xxxx…` streamed chunked (no Content-Length) up to this
    /// many bytes.
    Endless(usize),
}

#[derive(Default)]
struct Registry {
    schemas: Vec<String>,
    subjects: HashMap<String, u32>,
    /// `GET /schemas/ids/{id}` requests.
    gets: usize,
    /// All requests that reached the HTTP layer.
    requests: usize,
    /// Required `Authorization` header value (401 otherwise).
    auth: Option<String>,
    /// Every request answered with this status (an outage).
    fail_with: Option<u16>,
    /// Hostile answers by id.
    raw: HashMap<u32, Raw>,
    /// Bytes of the endless answers actually written.
    endless_sent: Vec<usize>,
}

/// Starts the plain-HTTP stand-in; returns its URL and state.
fn stand_in() -> (String, Arc<Mutex<Registry>>) {
    stand_in_with(None)
}

/// Starts the stand-in, over TLS when `tls` is given.
fn stand_in_with(tls: Option<Arc<rustls::ServerConfig>>) -> (String, Arc<Mutex<Registry>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr().unwrap());
    let state = Arc::new(Mutex::new(Registry::default()));
    let st = state.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
            let (st, tls) = (st.clone(), tls.clone());
            std::thread::spawn(move || match tls {
                Some(cfg) => {
                    let Ok(server) = rustls::ServerConnection::new(cfg) else {
                        return;
                    };
                    serve(rustls::StreamOwned::new(server, conn), &st);
                }
                None => serve(conn, &st),
            });
        }
    });
    (url, state)
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// One HTTP/1.1 request (None at the end of the connection).
fn read_request(r: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        if h.trim().is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers
        .get("content-length")
        .map_or(Some(0), |v| v.parse().ok())?;
    let mut body = vec![0; len.min(16 << 20)];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn error_body(code: u32, message: &str) -> Vec<u8> {
    serde_json::json!({ "error_code": code, "message": message })
        .to_string()
        .into_bytes()
}

/// `%XX` in a path segment.
fn decode_segment(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Ok(v) = u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or("zz"), 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the stand-in answers: status and body, or an endless stream.
enum Answer {
    Full(u16, Vec<u8>),
    Endless(usize),
}

fn answer(req: &Request, st: &Mutex<Registry>) -> Answer {
    let mut s = st.lock().unwrap();
    s.requests += 1;
    if let Some(status) = s.fail_with {
        return Answer::Full(status, error_body(50301, "Service unavailable"));
    }
    if let Some(want) = &s.auth {
        if req.headers.get("authorization") != Some(want) {
            return Answer::Full(401, error_body(401, "Unauthorized"));
        }
    }
    let path = req.path.split('?').next().unwrap_or("");
    if req.method == "POST" && path.starts_with("/subjects/") && path.ends_with("/versions") {
        let media = req.headers.get("content-type").map(String::as_str);
        if media != Some("application/vnd.schemaregistry.v1+json") {
            return Answer::Full(415, error_body(415, "Unsupported Media Type"));
        }
        let subject = decode_segment(&path["/subjects/".len()..path.len() - "/versions".len()]);
        let schema = serde_json::from_slice::<serde_json::Value>(&req.body)
            .ok()
            .and_then(|v| v["schema"].as_str().map(str::to_string));
        let Some(schema) = schema else {
            return Answer::Full(422, error_body(42201, "Invalid schema"));
        };
        let id = match s.schemas.iter().position(|x| *x == schema) {
            Some(i) => i as u32 + 1,
            None => {
                s.schemas.push(schema);
                s.schemas.len() as u32
            }
        };
        s.subjects.insert(subject, id);
        Answer::Full(
            200,
            serde_json::json!({ "id": id }).to_string().into_bytes(),
        )
    } else if let (true, Some(id)) = (req.method == "GET", path.strip_prefix("/schemas/ids/")) {
        s.gets += 1;
        let id: Option<u32> = id.parse().ok();
        match id.and_then(|i| s.raw.get(&i)) {
            Some(Raw::Body(b)) => return Answer::Full(200, b.clone()),
            Some(Raw::Endless(n)) => return Answer::Endless(*n),
            None => {}
        }
        match id.and_then(|i| s.schemas.get((i as usize).wrapping_sub(1))) {
            Some(schema) => Answer::Full(
                200,
                serde_json::json!({ "schema": schema })
                    .to_string()
                    .into_bytes(),
            ),
            None => Answer::Full(404, error_body(40403, "Schema not found")),
        }
    } else {
        Answer::Full(404, error_body(404, "HTTP 404 Not Found"))
    }
}

/// Answers requests on one connection until it closes (keep-alive).
fn serve<S: Read + Write>(stream: S, st: &Mutex<Registry>) {
    let mut r = BufReader::new(stream);
    while let Some(req) = read_request(&mut r) {
        let w = r.get_mut();
        let ok = match answer(&req, st) {
            Answer::Full(status, body) => write!(
                w,
                "HTTP/1.1 {status} X\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .and_then(|()| w.write_all(&body))
            .and_then(|()| w.flush())
            .is_ok(),
            Answer::Endless(total) => {
                let mut sent = 0;
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nTransfer-Encoding: chunked\r\n\r\n";
                let mut res = w.write_all(head.as_bytes());
                let start = b"{\"schema\": \"";
                res = res.and_then(|()| write!(w, "{:x}\r\n", start.len()));
                res = res.and_then(|()| w.write_all(start)).and_then(|()| w.write_all(b"\r\n"));
                let chunk = vec![b'x'; 64 << 10];
                while res.is_ok() && sent < total {
                    res = write!(w, "{:x}\r\n", chunk.len())
                        .and_then(|()| w.write_all(&chunk))
                        .and_then(|()| w.write_all(b"\r\n"))
                        .and_then(|()| w.flush());
                    if res.is_ok() {
                        sent += chunk.len();
                    }
                }
                st.lock().unwrap().endless_sent.push(sent);
                false
            }
        };
        if !ok {
            return;
        }
    }
}

/// A test CA and a server certificate for 127.0.0.1 and localhost signed
/// by it: the TLS config for the stand-in, and the CA as PEM.
fn tls_material() -> (Arc<rustls::ServerConfig>, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "riskstream test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "schema registry stand-in");
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf_cert.der().clone(), ca_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    (Arc::new(cfg), ca_cert.pem())
}

/// Display, Debug and every source of an error, for searching.
fn everything(e: &dyn std::error::Error) -> String {
    let mut all = format!("{e} | {e:?}");
    let mut src = e.source();
    while let Some(s) = src {
        all.push_str(&format!(" | {s} | {s:?}"));
        src = s.source();
    }
    all
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn options() -> RegistryOptions {
    RegistryOptions::default()
}

fn transaction_schema() -> riskstream::codec::KnownSchema {
    Codec::new().unwrap().transaction_schema().clone()
}

#[test]
fn https_with_the_ca_file_and_refused_without_it() {
    let (tls, ca_pem) = tls_material();
    let (url, state) = stand_in_with(Some(tls));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("registry-ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    let schema = transaction_schema();
    // Without the CA the handshake fails: no request reaches the registry.
    let e = SchemaRegistry::new(&url)
        .unwrap()
        .register("payments-value", &schema, TRANSACTION_SCHEMA)
        .unwrap_err();
    assert!(
        matches!(e, SchemaRegistryError::Connect { .. }),
        "{}",
        everything(&e)
    );
    assert!(e.to_string().contains(&url), "{e}");
    assert_eq!(state.lock().unwrap().requests, 0);
    // With it: register, then look up from a fresh client.
    let with_ca = || RegistryOptions {
        ca_file: Some(ca.clone()),
        ..options()
    };
    let reg = SchemaRegistry::with_options(&url, with_ca()).unwrap();
    assert!(reg.url().starts_with("https://127.0.0.1:"), "{}", reg.url());
    let id = reg
        .register("payments-value", &schema, TRANSACTION_SCHEMA)
        .unwrap();
    let back = SchemaRegistry::with_options(&url, with_ca())
        .unwrap()
        .schema(id)
        .unwrap();
    assert_eq!(back.fingerprint, schema.fingerprint);
    assert_eq!(state.lock().unwrap().gets, 1);
    // Records framed and decoded through the codec over https.
    let mut writer = Codec::new().unwrap();
    writer.connect_registry_with(&url, with_ca()).unwrap();
    assert_eq!(
        writer
            .register_output(Written::Transaction, "payments")
            .unwrap(),
        id
    );
    let mut reader = Codec::new().unwrap();
    reader.connect_registry_with(&url, with_ca()).unwrap();
    for tx in sample(10) {
        let bytes = writer.encode_transaction(&tx).unwrap();
        let got = reader
            .decode_transaction(Some(tx.customer_id.as_bytes()), Some(&bytes))
            .unwrap();
        assert_eq!(got, tx);
    }
    // A CA file that is missing or holds no certificate: a configuration
    // error at construction.
    for (path, content) in [
        (dir.path().join("missing.pem"), None),
        (dir.path().join("empty.pem"), Some("not a certificate\n")),
        (
            dir.path().join("garbage.pem"),
            Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        ),
    ] {
        if let Some(c) = content {
            std::fs::write(&path, c).unwrap();
        }
        let r = SchemaRegistry::with_options(
            &url,
            RegistryOptions {
                ca_file: Some(path.clone()),
                ..options()
            },
        );
        let e = r.expect_err(&path.display().to_string());
        assert!(
            matches!(
                e,
                SchemaRegistryError::CaFile { .. } | SchemaRegistryError::Client { .. }
            ),
            "{}",
            everything(&e)
        );
        assert!(!e.is_transient());
    }
}

#[test]
fn outages_are_transient_and_not_cached() {
    let (url, state) = stand_in();
    let reg = SchemaRegistry::new(&url).unwrap();
    let schema = transaction_schema();
    for status in [503, 500, 429] {
        state.lock().unwrap().fail_with = Some(status);
        let before = state.lock().unwrap().requests;
        for _ in 0..2 {
            let e = reg.schema(1).unwrap_err();
            assert!(
                matches!(e, SchemaRegistryError::Status { status: s, .. } if s == status),
                "{e}"
            );
            assert!(e.is_transient(), "{e}");
        }
        // Each lookup asked again: transient failures are not cached.
        assert_eq!(state.lock().unwrap().requests, before + 2);
        let e = reg
            .register("payments-value", &schema, TRANSACTION_SCHEMA)
            .unwrap_err();
        assert!(e.is_transient(), "{e}");
    }
    // The codec reports it as an outage, not as the record's fault.
    let mut codec = Codec::new().unwrap();
    codec.connect_registry(&url).unwrap();
    let framed = [0u8, 0, 0, 0, 1, 2, 0];
    let e = codec
        .decode_transaction(Some(b"c1"), Some(&framed))
        .unwrap_err();
    assert!(
        matches!(e, DecodeError::RegistryUnavailable { id: 1, .. }),
        "{e}"
    );
    assert_eq!(e.reason(), "schema_registry_unavailable");
    // Back up: the same id resolves.
    state.lock().unwrap().fail_with = None;
    let id = reg
        .register("payments-value", &schema, TRANSACTION_SCHEMA)
        .unwrap();
    assert_eq!(id, 1);
    assert!(SchemaRegistry::new(&url).unwrap().schema(1).is_ok());
    // Nothing listening: a connect error, transient.
    let closed = format!("http://127.0.0.1:{}", closed_port());
    let e = SchemaRegistry::new(&closed).unwrap().schema(1).unwrap_err();
    assert!(
        matches!(e, SchemaRegistryError::Connect { .. }),
        "{}",
        everything(&e)
    );
    assert!(e.is_transient());
    let mut codec = Codec::new().unwrap();
    codec.connect_registry(&closed).unwrap();
    let e = codec
        .decode_transaction(Some(b"c1"), Some(&framed))
        .unwrap_err();
    assert!(matches!(e, DecodeError::RegistryUnavailable { .. }), "{e}");
    // A registry that accepts connections and never answers: a timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    std::thread::spawn(move || {
        let held: Vec<TcpStream> = silent.incoming().filter_map(Result::ok).collect();
        drop(held);
    });
    let slow = SchemaRegistry::with_options(
        &silent_url,
        RegistryOptions {
            timeout: Duration::from_millis(300),
            ..options()
        },
    )
    .unwrap();
    let t0 = Instant::now();
    let e = slow.schema(1).unwrap_err();
    assert!(
        matches!(e, SchemaRegistryError::Timeout { .. }),
        "{}",
        everything(&e)
    );
    assert!(e.is_transient());
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

#[test]
fn unknown_ids_are_fetched_once_then_negatively_cached() {
    let (url, state) = stand_in();
    let gets = || state.lock().unwrap().gets;
    let reg = SchemaRegistry::with_options(
        &url,
        RegistryOptions {
            negative_ttl: Duration::from_millis(400),
            ..options()
        },
    )
    .unwrap();
    for _ in 0..100 {
        let e = reg.schema(4242).unwrap_err();
        assert!(e.is_not_found() && !e.is_transient(), "{e}");
        assert!(e.to_string().contains("4242"), "{e}");
    }
    assert_eq!(gets(), 1);
    // Once the TTL has passed, asked again.
    std::thread::sleep(Duration::from_millis(500));
    assert!(reg.schema(4242).unwrap_err().is_not_found());
    assert_eq!(gets(), 2);
    // The codec with the default options (60 s): one request, every
    // record an unknown schema id.
    let mut codec = Codec::new().unwrap();
    codec.connect_registry(&url).unwrap();
    for _ in 0..50 {
        let e = codec
            .decode_transaction(Some(b"c1"), Some(&[0u8, 0, 0, 3, 231, 2, 0]))
            .unwrap_err();
        assert!(
            matches!(e, DecodeError::UnknownSchemaId { id: 999, .. }),
            "{e}"
        );
    }
    assert_eq!(gets(), 3);
    // An id registered meanwhile is no longer "not found".
    assert!(reg.schema(1).unwrap_err().is_not_found());
    assert_eq!(gets(), 4);
    let id = reg
        .register("payments-value", &transaction_schema(), TRANSACTION_SCHEMA)
        .unwrap();
    assert_eq!(id, 1);
    assert!(reg.schema(1).is_ok());
    // A 404 that is not Confluent's "schema not found" (a wrong path
    // prefix): permanent, but not remembered as a missing id.
    let wrong = SchemaRegistry::new(&format!("{url}/not-the-registry")).unwrap();
    let requests = state.lock().unwrap().requests;
    for _ in 0..2 {
        let e = wrong.schema(1).unwrap_err();
        assert!(
            matches!(
                e,
                SchemaRegistryError::Status {
                    status: 404,
                    error_code: Some(404),
                    ..
                }
            ),
            "{e}"
        );
        assert!(!e.is_transient());
    }
    assert_eq!(state.lock().unwrap().requests, requests + 2);
}

#[test]
fn oversized_responses_are_refused() {
    let (url, state) = stand_in();
    let big = serde_json::json!({ "schema": "x".repeat(2 << 20) })
        .to_string()
        .into_bytes();
    const ENDLESS: usize = 256 << 20;
    {
        let mut s = state.lock().unwrap();
        s.raw.insert(7, Raw::Body(big.clone()));
        s.raw.insert(8, Raw::Endless(ENDLESS));
    }
    let reg = SchemaRegistry::new(&url).unwrap();
    let t0 = Instant::now();
    // Announced too large: refused before the body is read.
    let e = reg.schema(7).unwrap_err();
    assert!(
        matches!(e, SchemaRegistryError::TooLarge { limit: 1048576, length: Some(n) } if n == big.len() as u64),
        "{e}"
    );
    assert!(!e.is_transient());
    // Streamed without a length: cut off at the limit.
    let e = reg.schema(8).unwrap_err();
    assert!(
        matches!(e, SchemaRegistryError::TooLarge { length: None, .. }),
        "{e}"
    );
    assert!(!e.is_transient());
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(wait_for(Duration::from_secs(10), || !state
        .lock()
        .unwrap()
        .endless_sent
        .is_empty()));
    let sent = state.lock().unwrap().endless_sent[0];
    assert!(sent < ENDLESS / 4, "the stand-in wrote {sent} bytes");
    // The schema behind an id never changes: not asked again.
    let gets = state.lock().unwrap().gets;
    assert!(reg.schema(7).is_err() && reg.schema(8).is_err());
    assert_eq!(state.lock().unwrap().gets, gets);
    // The limit is an option; the parser applies it too.
    let id = reg
        .register("payments-value", &transaction_schema(), TRANSACTION_SCHEMA)
        .unwrap();
    let small = SchemaRegistry::with_options(
        &url,
        RegistryOptions {
            max_response_bytes: 256,
            ..options()
        },
    )
    .unwrap();
    assert!(matches!(
        small.schema(id),
        Err(SchemaRegistryError::TooLarge { limit: 256, .. })
    ));
    assert!(matches!(
        parse_schema_response(&big, &ResponseLimits::default()),
        Err(SchemaRegistryError::TooLarge { .. })
    ));
}

#[test]
fn deep_and_recursive_schemas_are_refused_without_exhausting_the_stack() {
    let (url, state) = stand_in();
    let deep_schema = format!(
        "{}\"int\"{}",
        r#"{"type":"array","items":"#.repeat(10_000),
        "}".repeat(10_000)
    );
    let deep_body = serde_json::json!({ "schema": deep_schema })
        .to_string()
        .into_bytes();
    let deep_outer = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes();
    let deep_unknown = format!(
        r#"{{"schema":"\"int\"","x":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    )
    .into_bytes();
    let recursive = [
        r#"{"type":"record","name":"Node","fields":[{"name":"next","type":"Node"}]}"#,
        r#"{"type":"record","name":"List","namespace":"x","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","x.List"]}]}"#,
    ];
    {
        let mut s = state.lock().unwrap();
        s.raw.insert(20, Raw::Body(deep_body.clone()));
        s.raw.insert(21, Raw::Body(deep_outer));
        s.raw.insert(22, Raw::Body(deep_unknown));
        for (i, r) in recursive.iter().enumerate() {
            let body = serde_json::json!({ "schema": r }).to_string().into_bytes();
            s.raw.insert(23 + i as u32, Raw::Body(body));
        }
    }
    // On a small stack: nothing here may recurse per nesting level.
    let url2 = url.clone();
    std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let reg = SchemaRegistry::new(&url2).unwrap();
            let e = reg.schema(20).unwrap_err();
            assert!(
                matches!(e, SchemaRegistryError::SchemaTooDeep { limit: 32 }),
                "{e}"
            );
            assert!(!e.is_transient());
            let e = reg.schema(21).unwrap_err();
            assert!(matches!(e, SchemaRegistryError::BadResponse { .. }), "{e}");
            // Deep JSON in a field the client ignores: skipped or refused.
            match reg.schema(22) {
                Ok(s) => assert_eq!(s.full_name, "Int"),
                Err(e) => assert!(matches!(e, SchemaRegistryError::BadResponse { .. }), "{e}"),
            }
            for id in [23, 24] {
                let e = reg.schema(id).unwrap_err();
                assert!(
                    matches!(e, SchemaRegistryError::SchemaRefused { .. }),
                    "{id}: {e}"
                );
                assert!(e.to_string().contains("recursive"), "{e}");
                assert!(!e.is_transient());
                // Remembered: the same answer without asking again.
                let again = reg.schema(id).unwrap_err().to_string();
                assert!(
                    again.contains("recursive") && again.ends_with("(cached)"),
                    "{again}"
                );
                assert_eq!(again.matches("refused").count(), 1, "{again}");
            }
            let limits = ResponseLimits::default();
            assert!(matches!(
                parse_schema_response(&deep_body, &limits),
                Err(SchemaRegistryError::SchemaTooDeep { .. })
            ));
        })
        .unwrap()
        .join()
        .unwrap();
    // Records framed with those ids are dead letters (not the registry's
    // outage), in the worker and in `tail`.
    let mut codec = Codec::new().unwrap();
    codec.connect_registry(&url).unwrap();
    for id in [20u32, 21, 23, 24] {
        let mut framed = vec![0u8];
        framed.extend_from_slice(&id.to_be_bytes());
        framed.extend_from_slice(&[2, 0, 2, 0]);
        let e = codec
            .decode_transaction(Some(b"c1"), Some(&framed))
            .unwrap_err();
        assert!(matches!(e, DecodeError::UnknownSchemaId { .. }), "{e}");
        assert!(codec.to_json(&framed).is_err());
    }
}

#[test]
fn credentials_never_show_in_errors() {
    let schema = transaction_schema();
    for bad in [
        "http://user:secret@127.0.0.1:notaport",
        "http://user:secret@[::1",
        "http://user:se/cret@127.0.0.1:8081",
        "user:secret@127.0.0.1:8081",
        "ftp://user:secret@127.0.0.1/",
        "http://user:secret@127.0.0.1:8081/?q=1",
    ] {
        let e = SchemaRegistry::new(bad).unwrap_err();
        let all = everything(&e);
        assert!(
            !all.contains("secret") && !all.contains("cret"),
            "{bad}: {all}"
        );
        assert!(all.contains("***@"), "{bad}: {all}");
        assert!(!e.is_transient());
        let e = Codec::new().unwrap().connect_registry(bad).unwrap_err();
        let all = everything(&e);
        assert!(
            !all.contains("secret") && !all.contains("cret"),
            "{bad}: {all}"
        );
    }
    // A good URL with credentials: never in url(), Debug, or call errors.
    let port = closed_port();
    let reg = SchemaRegistry::new(&format!("http://user:secret@127.0.0.1:{port}/sr/")).unwrap();
    assert_eq!(reg.url(), format!("http://127.0.0.1:{port}/sr"));
    assert!(!format!("{reg:?}").contains("secret"));
    let e = reg.schema(1).unwrap_err();
    assert!(e.is_transient());
    let e2 = reg
        .register("payments-value", &schema, TRANSACTION_SCHEMA)
        .unwrap_err();
    for e in [e, e2] {
        let all = everything(&e);
        assert!(!all.contains("secret") && !all.contains("user:"), "{all}");
        assert!(all.contains(&format!("127.0.0.1:{port}/sr")), "{all}");
    }
    let opts = RegistryOptions {
        basic_auth: Some(BasicAuth {
            username: "user".into(),
            password: Some("secret".into()),
        }),
        ..options()
    };
    assert!(!format!("{opts:?}").contains("secret"));
}

#[test]
fn credentials_are_sent_as_basic_auth() {
    let (url, state) = stand_in();
    let b64 = base64::engine::general_purpose::STANDARD;
    state.lock().unwrap().auth = Some(format!("Basic {}", b64.encode("svc-riskstream:p@ss w:rd")));
    let hostport = url.strip_prefix("http://").unwrap();
    let with_creds = format!("http://svc-riskstream:p%40ss%20w%3Ard@{hostport}");
    let schema = transaction_schema();
    let id = SchemaRegistry::new(&with_creds)
        .unwrap()
        .register("payments-value", &schema, TRANSACTION_SCHEMA)
        .unwrap();
    assert!(SchemaRegistry::new(&with_creds).unwrap().schema(id).is_ok());
    // From the options, the URL without user info.
    let opts = RegistryOptions {
        basic_auth: Some(BasicAuth {
            username: "svc-riskstream".into(),
            password: Some("p@ss w:rd".into()),
        }),
        ..options()
    };
    assert!(SchemaRegistry::with_options(&url, opts)
        .unwrap()
        .schema(id)
        .is_ok());
    // Through the codec: the worker's registration.
    let mut codec = Codec::new().unwrap();
    codec.connect_registry(&with_creds).unwrap();
    assert_eq!(codec.registry_url(), Some(url.as_str()));
    codec
        .register_output(Written::Transaction, "payments.auth")
        .unwrap();
    assert_eq!(
        state.lock().unwrap().subjects.get("payments.auth-value"),
        Some(&id)
    );
    // Wrong or missing credentials: 401, permanent, no password in sight.
    for bad in [
        format!("http://svc-riskstream:nope-secret@{hostport}"),
        url.clone(),
    ] {
        let e = SchemaRegistry::new(&bad).unwrap().schema(id).unwrap_err();
        assert!(
            matches!(e, SchemaRegistryError::Status { status: 401, .. }),
            "{e}"
        );
        assert!(!e.is_transient());
        assert!(!everything(&e).contains("nope-secret"));
    }
}

/// The worker connects and registers from async code: the blocking client
/// must not run on the runtime's thread (reqwest panics there in debug
/// builds), the registry moves its calls off it.
#[tokio::test(flavor = "current_thread")]
async fn calls_from_inside_a_tokio_runtime() {
    let (url, state) = stand_in();
    let mut codec = Codec::new().unwrap();
    codec.connect_registry(&url).unwrap();
    let id = codec
        .register_output(Written::Transaction, "payments")
        .unwrap();
    let reg = SchemaRegistry::new(&url).unwrap();
    assert!(reg.schema(id).is_ok());
    assert!(reg.schema(id + 1).unwrap_err().is_not_found());
    assert_eq!(state.lock().unwrap().gets, 2);
    drop(reg);
}

/// The schemas of the answers the mutations start from.
fn schema_texts() -> Vec<&'static str> {
    use riskstream::codec::{DRIFT_SCHEMA, LABEL_SCHEMA, SCORED_SCHEMA};
    vec![
        TRANSACTION_SCHEMA,
        SCORED_SCHEMA,
        LABEL_SCHEMA,
        DRIFT_SCHEMA,
        "\"string\"",
        r#"{"type":"enum","name":"E","symbols":["A","B"]}"#,
        r#"{"type":"record","name":"R","fields":[{"name":"m","type":{"type":"map","values":{"type":"array","items":["null","long"]}}}]}"#,
    ]
}

/// Valid `GET /schemas/ids/{id}` answers the mutations start from.
fn schema_answers() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for s in schema_texts() {
        out.push(serde_json::json!({ "schema": s }).to_string().into_bytes());
        out.push(
            serde_json::json!({ "schema": s, "schemaType": "AVRO", "references": [], "id": 3 })
                .to_string()
                .into_bytes(),
        );
    }
    out
}

fn register_answers() -> Vec<Vec<u8>> {
    [
        r#"{"id":1}"#,
        r#"{"id": 4294967295}"#,
        r#"{"id":17,"version":3,"subject":"payments-value"}"#,
        r#"{ "id" : 2147483647 , "schema" : "\"int\"" }"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// Bytes JSON is made of, to hit the parser's states more often than
/// uniform bytes do.
const JSON_BYTES: &[u8] = b"{}[]\":,\\ntrufalse0123456789-+.eE \t\nxu\x00\x7f\xc3\xff";

fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![any::<u8>(), prop::sample::select(JSON_BYTES.to_vec())]
}

fn random_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        prop::collection::vec(prop::sample::select(JSON_BYTES.to_vec()), 0..512),
    ]
}

/// Edits: 0-3 overwrite a byte, 4-5 insert one, 6 delete one, 7 truncate.
fn edits() -> impl Strategy<Value = Vec<(u8, prop::sample::Index, u8)>> {
    prop::collection::vec((0u8..8, any::<prop::sample::Index>(), byte()), 1..6)
}

fn mutate(mut b: Vec<u8>, edits: &[(u8, prop::sample::Index, u8)]) -> Vec<u8> {
    for (kind, at, v) in edits {
        let i = at.index(b.len() + 1);
        match kind {
            0..=3 if i < b.len() => b[i] = *v,
            4 | 5 => b.insert(i, *v),
            6 if i < b.len() => {
                b.remove(i);
            }
            7 => b.truncate(i),
            _ => {}
        }
    }
    b
}

/// A schema answer through the whole lookup path: the answer's parser,
/// then the Avro parse and checks behind it. Returns how far it got:
/// (past the answer's parser, schema accepted).
fn check_schema_answer(body: &[u8]) -> (bool, bool) {
    let limits = ResponseLimits::default();
    match parse_schema_response(body, &limits) {
        Ok(text) => (true, parse_registry_schema(1, &text).is_ok()),
        Err(_) => (false, false),
    }
}

/// Mutated schema answers: half of them with the edits anywhere in the
/// answer (mostly the JSON parser's business), half of them intact JSON
/// around a mutated schema (the Avro schema parse's).
fn mutated_answers() -> impl Strategy<Value = Vec<u8>> {
    let anywhere =
        (prop::sample::select(schema_answers()), edits()).prop_map(|(b, e)| mutate(b, &e));
    let in_schema = (prop::sample::select(schema_texts()), edits()).prop_map(|(text, e)| {
        let schema = String::from_utf8_lossy(&mutate(text.as_bytes().to_vec(), &e)).into_owned();
        serde_json::json!({ "schema": schema })
            .to_string()
            .into_bytes()
    });
    prop_oneof![anywhere, in_schema]
}

/// The least share of mutated schema answers that must get past the
/// answer's JSON parser into the Avro schema parse: all of the mutated
/// schemas and some of the answers mutated anywhere (56.6 % measured).
const MIN_SCHEMA_PARSE_SHARE: f64 = 0.5;

/// Mutated schema answers through the whole lookup path (100 000 cases):
/// none panics, at least [`MIN_SCHEMA_PARSE_SHARE`] of them reach the Avro
/// schema parse behind the answer's parser, and some are accepted.
#[test]
fn schema_answer_parser_takes_mutated_answers() {
    use proptest::test_runner::{Config, TestRunner};
    const CASES: u32 = 100_000;
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let (parsed, accepted) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
    runner
        .run(&mutated_answers(), |answer| {
            let (p, a) = check_schema_answer(&answer);
            parsed.set(parsed.get() + u32::from(p));
            accepted.set(accepted.get() + u32::from(a));
            Ok(())
        })
        .unwrap();
    let share = f64::from(parsed.get()) / f64::from(CASES);
    eprintln!(
        "{CASES} mutated schema answers: {:.1}% past the answer's parser, {} accepted",
        100.0 * share,
        accepted.get()
    );
    assert!(
        share >= MIN_SCHEMA_PARSE_SHARE,
        "only {:.1}% of the mutated answers reached the schema parse",
        100.0 * share
    );
    assert!(accepted.get() > 0, "no mutated answer was accepted");
}

proptest! {
    #![proptest_config(ProptestConfig {
        // (No regressions file: this is an integration test.)
        failure_persistence: None,
        ..ProptestConfig::with_cases(100_000)
    })]

    #[test]
    fn schema_answer_parser_takes_random_bytes(body in random_body()) {
        check_schema_answer(&body);
    }

    #[test]
    fn register_answer_parser_takes_random_bytes(body in random_body()) {
        let _ = parse_register_response(&body);
    }

    #[test]
    fn register_answer_parser_takes_mutated_answers(
        base in prop::sample::select(register_answers()),
        edits in edits(),
    ) {
        let body = mutate(base, &edits);
        if let Ok(id) = parse_register_response(&body) {
            // Only an object with a u32 `id` parses: its digits are there.
            let text = String::from_utf8_lossy(&body);
            prop_assert!(text.contains(&id.to_string()), "{} from {:?}", id, text);
        }
    }
}

fn sample(n: usize) -> Vec<riskstream::codec::Transaction> {
    rows(100, n).iter().map(|r| r.transaction()).collect()
}

/// The registry a shared test body runs against: the stand-in, whose
/// state it can check too, or a real one, asked only over its REST API.
#[derive(Clone, Copy)]
enum Target<'a> {
    StandIn(&'a Mutex<Registry>),
    /// Only tier 2 has a real registry.
    #[cfg_attr(not(feature = "external-tests"), allow(dead_code))]
    Real,
}

impl Target<'_> {
    /// The id registered under `subject` (its latest version), if any.
    fn subject_id(self, url: &str, subject: &str) -> Option<u32> {
        match self {
            Target::StandIn(state) => state.lock().unwrap().subjects.get(subject).copied(),
            // `GET /subjects/{subject}/versions/latest` → `{"id": N, ...}`,
            // off any runtime the caller is on (blocking client).
            Target::Real => std::thread::scope(|s| {
                s.spawn(|| {
                    let url = format!("{url}/subjects/{subject}/versions/latest");
                    let client = reqwest::blocking::Client::builder()
                        .no_proxy()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .unwrap();
                    let resp = client.get(&url).send().unwrap();
                    let status = resp.status();
                    let body = resp.text().unwrap();
                    if status == reqwest::StatusCode::NOT_FOUND {
                        return None;
                    }
                    assert!(status.is_success(), "GET {url}: {status} {body}");
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    let id = v["id"].as_u64().unwrap_or_else(|| panic!("{url}: {body}"));
                    Some(u32::try_from(id).unwrap())
                })
                .join()
                .unwrap()
            }),
        }
    }

    /// `GET /schemas/ids/{id}` requests the stand-in has answered (None for
    /// a real registry).
    fn gets(self) -> Option<usize> {
        match self {
            Target::StandIn(state) => Some(state.lock().unwrap().gets),
            Target::Real => None,
        }
    }
}

/// Records framed through the registry at `url` round-trip; records
/// framed with ids it does not know are refused as the record's fault.
/// Subjects are `{topic}-value` and `{topic}.copy-value`.
fn framing_round_trips(url: &str, target: Target, topic: &str) {
    let mut writer = Codec::new().unwrap();
    writer.connect_registry(url).unwrap();
    let id = writer.register_output(Written::Transaction, topic).unwrap();
    assert_eq!(target.subject_id(url, &format!("{topic}-value")), Some(id));
    // One id per schema: the same schema under another subject, and again
    // under the first, gets the same id.
    let copy = format!("{topic}.copy");
    assert_eq!(
        writer.register_output(Written::Transaction, &copy).unwrap(),
        id
    );
    assert_eq!(target.subject_id(url, &format!("{copy}-value")), Some(id));
    assert_eq!(
        writer.register_output(Written::Transaction, topic).unwrap(),
        id
    );
    let txs = sample(100);
    let mut reader = Codec::new().unwrap();
    reader.connect_registry(url).unwrap();
    let gets = target.gets();
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
    assert_eq!(target.gets(), gets.map(|g| g + 1));
    // The registry gives back the schema registered (whatever its
    // formatting): same canonical form.
    let back = SchemaRegistry::new(url).unwrap().schema(id).unwrap();
    assert_eq!(back.fingerprint, transaction_schema().fingerprint);
    // Scored records too, under their own subject.
    let sid = writer
        .register_output(Written::Scored, &format!("{topic}.scored"))
        .unwrap();
    assert_ne!(sid, id);
    assert_eq!(
        target.subject_id(url, &format!("{topic}.scored-value")),
        Some(sid)
    );
    // An id the registry does not know: not found (Confluent's 40403),
    // permanent; a record framed with it is refused for its schema id.
    let unknown = i32::MAX as u32;
    let e = SchemaRegistry::new(url)
        .unwrap()
        .schema(unknown)
        .unwrap_err();
    assert!(e.is_not_found() && !e.is_transient(), "{}", everything(&e));
    let key = Some(txs[0].customer_id.as_bytes());
    let mut framed = vec![0u8];
    framed.extend_from_slice(&unknown.to_be_bytes());
    framed.extend_from_slice(&[2, 0]);
    let e = reader.decode_transaction(key, Some(&framed)).unwrap_err();
    assert!(
        matches!(e, DecodeError::UnknownSchemaId { id, .. } if id == unknown),
        "{e}"
    );
    assert_eq!(e.reason(), "unknown_schema_id");
    // Ids above i32::MAX (registry ids are Java ints) name no schema: not
    // found without asking.
    let gets = target.gets();
    for above in [1u32 << 31, u32::MAX] {
        let e = SchemaRegistry::new(url).unwrap().schema(above).unwrap_err();
        assert!(e.is_not_found() && !e.is_transient(), "{}", everything(&e));
        let mut framed = vec![0u8];
        framed.extend_from_slice(&above.to_be_bytes());
        framed.extend_from_slice(&[2, 0]);
        let e = reader.decode_transaction(key, Some(&framed)).unwrap_err();
        assert_eq!(e.reason(), "unknown_schema_id", "{e}");
    }
    assert_eq!(target.gets(), gets);
    // Bad framing: short header, no registry configured.
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

#[test]
fn confluent_framing_round_trips_through_the_registry() {
    let (url, state) = stand_in();
    framing_round_trips(&url, Target::StandIn(&state), "payments");
}

/// Tier 2: a real registry (Apicurio) and the broker.
#[cfg(feature = "external-tests")]
mod external {
    use super::*;

    /// The Confluent API base URL of the Apicurio Registry under test.
    fn apicurio_url() -> String {
        match std::env::var("RISKSTREAM_TEST_REGISTRY_URL") {
            Ok(url) if !url.trim().is_empty() => url.trim().trim_end_matches('/').to_string(),
            _ => panic!(
                "RISKSTREAM_TEST_REGISTRY_URL is not set: this test runs against a real schema \
                 registry (Apicurio Registry's Confluent API). Run `scripts/registry.sh start` and \
                 `export RISKSTREAM_TEST_REGISTRY_URL=$(scripts/registry.sh url)`"
            ),
        }
    }

    #[test]
    fn apicurio_registry_confluent_framing_round_trips() {
        framing_round_trips(&apicurio_url(), Target::Real, &unique("payments"));
    }

    /// A worker with `--schema-registry-url url` scores Confluent-framed input
    /// and frames its output (and drift reports) with ids it registered.
    async fn worker_round_trip(url: &str, target: Target<'_>, name: &str) {
        let t = Topics::new(name);
        t.create(4).await;
        let mut writer = Codec::new().unwrap();
        writer.connect_registry(url).unwrap();
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
        let w = Worker::start(&t, &["--schema-registry-url", url]);
        let out = read_topic(&t.output, txs.len(), Duration::from_secs(60));
        assert_eq!(out.len(), txs.len(), "log:\n{}", w.log_text());
        let scored_id = target
            .subject_id(url, &format!("{}-value", t.output))
            .expect("the worker registered its output's schema");
        let mut reader = Codec::new().unwrap();
        reader.connect_registry(url).unwrap();
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
        assert!(target
            .subject_id(url, &format!("{}-value", t.drift))
            .is_some());
        assert_eq!(read_topic(&t.dlq, 1, Duration::from_secs(2)).len(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn worker_reads_and_writes_confluent_framed_records() {
        let (url, state) = stand_in();
        worker_round_trip(&url, Target::StandIn(&state), "sr").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_reads_and_writes_confluent_framed_records_through_apicurio() {
        worker_round_trip(&apicurio_url(), Target::Real, "sr-apicurio").await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_registry_outage_holds_the_records_instead_of_dead_lettering_them() {
        let (url, state) = stand_in();
        let t = Topics::new("sr-outage");
        t.create(1).await;
        let mut writer = Codec::new().unwrap();
        writer.connect_registry(&url).unwrap();
        writer
            .register_output(Written::Transaction, &t.input)
            .unwrap();
        let mut w = Worker::start(&t, &["--schema-registry-url", &url]);
        assert!(
            wait_for(Duration::from_secs(30), || w
                .log_text()
                .contains("Confluent framing")),
            "{}",
            w.log_text()
        );
        // The registry goes down before the worker has seen the input's schema id.
        state.lock().unwrap().fail_with = Some(503);
        let txs = sample(200);
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
        assert!(
            wait_for(Duration::from_secs(20), || w
                .log_text()
                .contains("schema registry unavailable")),
            "{}",
            w.log_text()
        );
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            read_topic(&t.output, 1, Duration::from_secs(1)).len(),
            0,
            "nothing scored"
        );
        assert_eq!(
            read_topic(&t.dlq, 1, Duration::from_secs(1)).len(),
            0,
            "nothing dead-lettered"
        );
        assert!(
            committed(&t.group, &t.input, 1).iter().all(|o| *o <= 0),
            "nothing committed"
        );
        let (_, metrics) = http_get(&w.log_text(), "/metrics");
        assert!(
            metrics.contains("riskstream_schema_registry_waiting 1"),
            "{metrics}"
        );
        // Back up: every record is scored, none was lost.
        state.lock().unwrap().fail_with = None;
        let out = read_topic(&t.output, txs.len(), Duration::from_secs(60));
        assert_eq!(out.len(), txs.len(), "log:\n{}", w.log_text());
        assert_eq!(read_topic(&t.dlq, 1, Duration::from_secs(2)).len(), 0);
        assert!(w.log_text().contains("schema registry reachable again"));
        w.stop_cleanly(Duration::from_secs(30));
        assert_eq!(committed(&t.group, &t.input, 1), vec![txs.len() as i64]);
    }
}
