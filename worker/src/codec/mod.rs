//! Codec: Avro schemas and the wire format of every riskstream topic.
//!
//! Owns the `.avsc` files under `schemas/` (embedded at build time), Avro
//! single-object encoding (`C3 01` + 8-byte little-endian CRC-64-AVRO
//! fingerprint of the writer schema's Parsing Canonical Form + datum, as the
//! Avro specification defines it: see [`canonical`]; records with the
//! fingerprints riskstream wrote before 0.2 still decode, counted as legacy), writer-schema lookup by
//! fingerprint with Avro schema resolution into the reader schema, and the
//! validation of decoded transactions. Every failure has a stable
//! [`DecodeError::reason`] code that ends up in dead-letter headers and metrics.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

use apache_avro::rabin::Rabin;
use apache_avro::types::Value;
use apache_avro::Schema;
use serde::{Deserialize, Serialize};

use crate::metrics::events::DecodeReason;
use crate::metrics::Metrics;

pub mod canonical;
pub mod drift;
pub mod guard;
pub mod registry;
pub use drift::{
    DriftReport, DriftSlice, PerformanceReport, ScaleDrift, ScoreBin, SlicesRecord, VariableDrift,
    VariableSummary,
};
pub use registry::{SchemaRegistry, SchemaRegistryError, CONFLUENT_HEADER_LEN, CONFLUENT_MAGIC};
use std::sync::Arc;

/// Marker bytes that open every single-object encoded record.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// Header length: magic plus the 64-bit fingerprint.
pub const HEADER_LEN: usize = 10;

pub const TRANSACTION_SCHEMA: &str = include_str!("../../../schemas/transaction.avsc");
pub const SCORED_SCHEMA: &str = include_str!("../../../schemas/scored_transaction.avsc");
pub const LABEL_SCHEMA: &str = include_str!("../../../schemas/fraud_label.avsc");
pub const DRIFT_SCHEMA: &str = include_str!("../../../schemas/drift_report.avsc");
pub const CUSTOMER_STATE_SCHEMA: &str = include_str!("../../../schemas/customer_state.avsc");
pub const DRIFT_SLICE_SCHEMA: &str = include_str!("../../../schemas/drift_slice.avsc");
pub const PERFORMANCE_SCHEMA: &str = include_str!("../../../schemas/performance_report.avsc");
/// Older writer schemas we still accept (schema evolution).
pub const HISTORY_SCHEMAS: &[&str] =
    &[include_str!("../../../schemas/history/transaction.v1.avsc")];

/// Why a record could not be turned into a value we can use.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum DecodeError {
    #[error("record has no key (expected the customer id)")]
    MissingKey,
    #[error("record has no payload")]
    EmptyPayload,
    #[error("not Avro single-object encoding: {0}")]
    NotSingleObject(String),
    #[error("Confluent schema id {id} cannot be resolved: {detail}")]
    UnknownSchemaId { id: u32, detail: String },
    /// The schema registry could not be asked (outage, timeout, 5xx): not
    /// the record's fault. The source waits and retries; never dead-lettered.
    #[error("schema registry unavailable for schema id {id}: {detail}")]
    RegistryUnavailable { id: u32, detail: String },
    #[error("unknown writer schema fingerprint {0:016x}")]
    UnknownFingerprint(u64),
    #[error("writer schema {found} cannot be read as {expected}")]
    WrongSchema { found: String, expected: String },
    #[error("malformed Avro datum: {0}")]
    Malformed(String),
    #[error("invalid field `{field}`: {detail}")]
    Invalid { field: &'static str, detail: String },
    /// Not finite, negative, or above the configured maximum.
    #[error("amount {0}")]
    InvalidAmount(String),
    /// Before the configured earliest time, or too far ahead of the wall
    /// clock or of the partition's event-time clock.
    #[error("event time {0}")]
    EventTimeOutOfRange(String),
}

impl DecodeError {
    /// Whose fault it is: the record's, except a registry that cannot be
    /// asked (an outage is not the record's fault).
    pub fn domain(&self) -> crate::outcome::Domain {
        match self {
            DecodeError::RegistryUnavailable { .. } => {
                crate::outcome::Domain::External { transient: true }
            }
            _ => crate::outcome::Domain::Input(crate::outcome::Input::Record),
        }
    }

    /// What happens to the record ([`crate::outcome::decide`]).
    pub fn outcome(&self) -> crate::outcome::Outcome {
        crate::outcome::decide(self.domain())
    }

    /// The stable reason code, typed (metric label; [`DecodeError::reason`]).
    pub fn code(&self) -> DecodeReason {
        match self {
            DecodeError::MissingKey => DecodeReason::MissingKey,
            DecodeError::EmptyPayload => DecodeReason::EmptyPayload,
            DecodeError::NotSingleObject(_) => DecodeReason::NotSingleObject,
            DecodeError::UnknownFingerprint(_) => DecodeReason::UnknownFingerprint,
            DecodeError::UnknownSchemaId { .. } => DecodeReason::UnknownSchemaId,
            DecodeError::RegistryUnavailable { .. } => DecodeReason::RegistryUnavailable,
            DecodeError::WrongSchema { .. } => DecodeReason::WrongSchema,
            DecodeError::Malformed(_) => DecodeReason::MalformedAvro,
            DecodeError::Invalid { .. } => DecodeReason::InvalidField,
            DecodeError::InvalidAmount(_) => DecodeReason::InvalidAmount,
            DecodeError::EventTimeOutOfRange(_) => DecodeReason::EventTimeOutOfRange,
        }
    }

    /// Short, stable reason code (dead-letter header `riskstream.reason`, metric label).
    pub fn reason(&self) -> &'static str {
        self.code().as_str()
    }

    /// Where decoding stopped: at the framing, before the datum was read,
    /// or in the decoder proper.
    pub fn stage(&self) -> DecodeStage {
        match self {
            DecodeError::EmptyPayload
            | DecodeError::NotSingleObject(_)
            | DecodeError::UnknownFingerprint(_)
            | DecodeError::UnknownSchemaId { .. }
            | DecodeError::RegistryUnavailable { .. }
            | DecodeError::WrongSchema { .. } => DecodeStage::Framing,
            DecodeError::MissingKey
            | DecodeError::Malformed(_)
            | DecodeError::Invalid { .. }
            | DecodeError::InvalidAmount(_)
            | DecodeError::EventTimeOutOfRange(_) => DecodeStage::Datum,
        }
    }
}

/// Where a decode failed ([`DecodeError::stage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeStage {
    /// The framing: no payload, the single-object magic and fingerprint or
    /// the Confluent schema id, a writer schema of another record type.
    Framing,
    /// The datum, read by the decoder proper: the Avro body and the checks
    /// of its fields (the key against the customer id among them).
    Datum,
}

/// Errors loading schemas.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot parse Avro schema {origin}")]
    Parse {
        origin: String,
        #[source]
        source: Box<apache_avro::Error>,
    },
    #[error("Avro schema {origin} has no canonical form")]
    Canonical {
        origin: String,
        #[source]
        source: canonical::CanonicalError,
    },
    #[error("cannot read schema file {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode {what}: {detail}")]
    Encode { what: &'static str, detail: String },
    #[error(transparent)]
    Registry(#[from] SchemaRegistryError),
}

/// Which record type a topic carries (for registering its subject).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Transaction,
    Scored,
    Label,
    Drift,
}

/// A card transaction as it arrives on the input topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub transaction_id: String,
    /// Event time, epoch milliseconds UTC.
    pub event_time: i64,
    pub customer_id: String,
    pub terminal_id: String,
    pub amount: f64,
    pub currency: String,
}

/// The record written to the output topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredTransaction {
    pub transaction_id: String,
    pub event_time: i64,
    pub customer_id: String,
    pub terminal_id: String,
    pub amount: f64,
    pub currency: String,
    pub score: f32,
    pub is_fraud: bool,
    pub threshold: f32,
    pub model_name: String,
    pub model_version: String,
    pub scored_at: i64,
}

/// The transaction fields of a scored record, borrowed.
#[derive(Debug, Clone, Copy)]
struct TxView<'a> {
    transaction_id: &'a str,
    event_time: i64,
    customer_id: &'a str,
    terminal_id: &'a str,
    amount: f64,
    currency: &'a str,
}

/// What a model said about a transaction (the scored record's own fields).
#[derive(Debug, Clone, Copy)]
pub struct Verdict<'a> {
    pub score: f32,
    pub is_fraud: bool,
    pub threshold: f32,
    pub model_name: &'a str,
    pub model_version: &'a str,
    pub scored_at: i64,
}

/// Delayed label feedback for one past transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FraudLabel {
    pub transaction_id: String,
    pub customer_id: String,
    pub terminal_id: String,
    pub event_time: i64,
    pub is_fraud: bool,
    pub reported_at: i64,
}

/// A parsed schema with its fingerprint.
#[derive(Debug, Clone)]
pub struct KnownSchema {
    pub schema: Schema,
    /// The Avro specification's fingerprint: CRC-64-AVRO of the Parsing
    /// Canonical Form (what every other Avro implementation computes).
    pub fingerprint: u64,
    /// The fingerprint riskstream wrote before it followed the
    /// specification (apache-avro 0.21's canonical form, which keeps
    /// `{"type":"long"}` for logical types); accepted on input only.
    pub legacy_fingerprint: u64,
    pub full_name: String,
}

impl KnownSchema {
    pub fn parse(text: &str, origin: &str) -> Result<Self, SchemaError> {
        let schema = Schema::parse_str(text).map_err(|e| SchemaError::Parse {
            origin: origin.to_string(),
            source: Box::new(e),
        })?;
        let legacy = schema.fingerprint::<Rabin>();
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&legacy.bytes[..8]);
        let fingerprint =
            canonical::fingerprint(text).map_err(|source| SchemaError::Canonical {
                origin: origin.to_string(),
                source,
            })?;
        let full_name = match &schema {
            Schema::Record(r) => r.name.fullname(None),
            other => format!("{other:?}"),
        };
        Ok(Self {
            schema,
            fingerprint,
            legacy_fingerprint: u64::from_le_bytes(bytes),
            full_name,
        })
    }

    /// Single-object header for this schema.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..2].copy_from_slice(&SINGLE_OBJECT_MAGIC);
        h[2..].copy_from_slice(&self.fingerprint.to_le_bytes());
        h
    }
}

/// A writer schema known by one of its fingerprints.
#[derive(Debug, Clone)]
struct Writer {
    schema: Arc<KnownSchema>,
    /// Found by its legacy (pre-specification) fingerprint.
    legacy: bool,
}

/// Encoder/decoder for all riskstream topics. Cheap to clone behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Codec {
    transaction: KnownSchema,
    scored: KnownSchema,
    label: KnownSchema,
    drift: KnownSchema,
    customer_state: KnownSchema,
    drift_slice: KnownSchema,
    performance: KnownSchema,
    /// Every writer schema we can decode, by fingerprint: the current ones,
    /// the history shipped with the binary, and any extra ones from config;
    /// each under its specification fingerprint and its legacy one.
    writers: HashMap<u64, Writer>,
    /// Where legacy-fingerprint records are counted (when attached).
    metrics: Option<Arc<Metrics>>,
    /// Legacy fingerprints already reported in the log (once per schema).
    legacy_logged: Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
    /// Confluent Schema Registry (decodes `0x00`-framed records when set).
    registry: Option<Arc<SchemaRegistry>>,
    /// Confluent schema id to frame our records with, by fingerprint
    /// (absent: single-object encoding).
    confluent_ids: HashMap<u64, u32>,
}

impl Codec {
    /// The built-in schemas.
    pub fn new() -> Result<Self, SchemaError> {
        let transaction = KnownSchema::parse(TRANSACTION_SCHEMA, "schemas/transaction.avsc")?;
        let scored = KnownSchema::parse(SCORED_SCHEMA, "schemas/scored_transaction.avsc")?;
        let label = KnownSchema::parse(LABEL_SCHEMA, "schemas/fraud_label.avsc")?;
        let drift = KnownSchema::parse(DRIFT_SCHEMA, "schemas/drift_report.avsc")?;
        let customer_state =
            KnownSchema::parse(CUSTOMER_STATE_SCHEMA, "schemas/customer_state.avsc")?;
        let drift_slice = KnownSchema::parse(DRIFT_SLICE_SCHEMA, "schemas/drift_slice.avsc")?;
        let performance =
            KnownSchema::parse(PERFORMANCE_SCHEMA, "schemas/performance_report.avsc")?;
        let mut codec = Self {
            transaction: transaction.clone(),
            scored: scored.clone(),
            label: label.clone(),
            drift: drift.clone(),
            customer_state: customer_state.clone(),
            drift_slice: drift_slice.clone(),
            performance: performance.clone(),
            writers: HashMap::new(),
            metrics: None,
            legacy_logged: Arc::default(),
            registry: None,
            confluent_ids: HashMap::new(),
        };
        for s in [
            transaction,
            scored,
            label,
            drift,
            customer_state,
            drift_slice,
            performance,
        ] {
            codec.insert_writer(s);
        }
        for (i, text) in HISTORY_SCHEMAS.iter().enumerate() {
            codec.add_writer_schema(text, &format!("schemas/history #{i}"))?;
        }
        Ok(codec)
    }

    /// Registers another writer schema (e.g. a newer producer's), so records
    /// written with it decode through schema resolution.
    pub fn add_writer_schema(&mut self, text: &str, origin: &str) -> Result<u64, SchemaError> {
        let s = KnownSchema::parse(text, origin)?;
        let fp = s.fingerprint;
        self.insert_writer(s);
        Ok(fp)
    }

    fn insert_writer(&mut self, s: KnownSchema) {
        let s = Arc::new(s);
        if s.legacy_fingerprint != s.fingerprint {
            self.writers
                .entry(s.legacy_fingerprint)
                .or_insert_with(|| Writer {
                    schema: s.clone(),
                    legacy: true,
                });
        }
        self.writers.insert(
            s.fingerprint,
            Writer {
                schema: s,
                legacy: false,
            },
        );
    }

    /// Counts legacy-fingerprint records in `metrics`
    /// (`riskstream_legacy_fingerprint_records_total`).
    pub fn attach_metrics(&mut self, metrics: Arc<Metrics>) {
        self.metrics = Some(metrics);
    }

    /// A record written with a pre-specification fingerprint: counted, and
    /// logged once per schema.
    fn note_legacy(&self, fp: u64, schema: &KnownSchema) {
        if let Some(m) = &self.metrics {
            m.legacy_fingerprint.increment(1);
        }
        let first = self
            .legacy_logged
            .lock()
            .map(|mut s| s.insert(fp))
            .unwrap_or(false);
        if first {
            tracing::warn!(
                schema = %schema.full_name,
                legacy_fingerprint = format!("{fp:016x}"),
                fingerprint = format!("{:016x}", schema.fingerprint),
                "records with riskstream's pre-0.2 (non-spec) fingerprint are accepted; \
                 producers should move to the Avro spec fingerprint (logged once per schema)"
            );
        }
    }

    /// Uses a Confluent Schema Registry: records framed `0x00` + schema id
    /// decode through it (schemas fetched once per id, then cached).
    pub fn connect_registry(&mut self, url: &str) -> Result<(), SchemaError> {
        self.connect_registry_with(url, registry::RegistryOptions::default())
    }

    /// [`Codec::connect_registry`] with options (CA file, timeouts, limits).
    pub fn connect_registry_with(
        &mut self,
        url: &str,
        options: registry::RegistryOptions,
    ) -> Result<(), SchemaError> {
        self.registry = Some(Arc::new(SchemaRegistry::with_options(url, options)?));
        Ok(())
    }

    /// The schema registry's URL without credentials, if one is connected.
    pub fn registry_url(&self) -> Option<&str> {
        self.registry.as_deref().map(SchemaRegistry::url)
    }

    /// Frames `which` records with the Confluent wire format from now on:
    /// registers the schema under `<topic>-value` (topic-name strategy) and
    /// returns its id. Needs [`Codec::connect_registry`] first.
    pub fn register_output(&mut self, which: Written, topic: &str) -> Result<u32, SchemaError> {
        let reg = self.registry.clone().ok_or_else(|| {
            SchemaError::Registry(SchemaRegistryError::Url(
                "(no schema registry configured)".into(),
            ))
        })?;
        let (schema, text) = match which {
            Written::Transaction => (&self.transaction, TRANSACTION_SCHEMA),
            Written::Scored => (&self.scored, SCORED_SCHEMA),
            Written::Label => (&self.label, LABEL_SCHEMA),
            Written::Drift => (&self.drift, DRIFT_SCHEMA),
        };
        let id = reg.register(&format!("{topic}-value"), schema, text)?;
        self.confluent_ids.insert(schema.fingerprint, id);
        Ok(id)
    }

    /// The header our records of `schema` start with.
    fn header_of(&self, schema: &KnownSchema, out: &mut Vec<u8>) {
        match self.confluent_ids.get(&schema.fingerprint) {
            Some(id) => {
                out.push(CONFLUENT_MAGIC);
                out.extend_from_slice(&id.to_be_bytes());
            }
            None => out.extend_from_slice(&schema.header()),
        }
    }

    /// Registers every `*.avsc` file in a directory.
    pub fn add_writer_schema_dir(&mut self, dir: &Path) -> Result<usize, SchemaError> {
        let io = |source| SchemaError::Io {
            path: dir.display().to_string(),
            source,
        };
        let mut n = 0;
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "avsc") {
                let text = std::fs::read_to_string(&path).map_err(|source| SchemaError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
                self.add_writer_schema(&text, &path.display().to_string())?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// The state changelog's schema (its records are framed and decoded by
    /// `state`, which owns that hot path).
    pub fn customer_state_schema(&self) -> &KnownSchema {
        &self.customer_state
    }

    pub fn transaction_schema(&self) -> &KnownSchema {
        &self.transaction
    }

    /// Splits a record into its writer schema and datum bytes: Avro
    /// single-object encoding, or Confluent framing when a registry is set.
    fn frame<'a>(&self, payload: &'a [u8]) -> Result<(Arc<KnownSchema>, &'a [u8]), DecodeError> {
        if payload.is_empty() {
            return Err(DecodeError::EmptyPayload);
        }
        if payload[0] == CONFLUENT_MAGIC {
            let Some(reg) = &self.registry else {
                return Err(DecodeError::NotSingleObject(
                    "starts with 00 (Confluent framing?) but no schema registry is configured (--schema-registry-url)".into(),
                ));
            };
            let Some(id) = payload.get(1..CONFLUENT_HEADER_LEN) else {
                return Err(DecodeError::NotSingleObject(format!(
                    "{} bytes, shorter than the {CONFLUENT_HEADER_LEN}-byte Confluent header",
                    payload.len()
                )));
            };
            let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
            let writer = reg.schema(id).map_err(|e| {
                let detail = crate::outcome::chain(&e).to_string();
                if e.is_transient() {
                    DecodeError::RegistryUnavailable { id, detail }
                } else {
                    DecodeError::UnknownSchemaId { id, detail }
                }
            })?;
            return Ok((writer, &payload[CONFLUENT_HEADER_LEN..]));
        }
        if payload.len() < HEADER_LEN {
            return Err(DecodeError::NotSingleObject(format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                payload.len()
            )));
        }
        if payload[..2] != SINGLE_OBJECT_MAGIC {
            return Err(DecodeError::NotSingleObject(format!(
                "starts with {:02x} {:02x}, expected c3 01",
                payload[0], payload[1]
            )));
        }
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&payload[2..HEADER_LEN]);
        let fp = u64::from_le_bytes(fp);
        let writer = self
            .writers
            .get(&fp)
            .ok_or(DecodeError::UnknownFingerprint(fp))?;
        if writer.legacy {
            self.note_legacy(fp, &writer.schema);
        }
        Ok((writer.schema.clone(), &payload[HEADER_LEN..]))
    }

    /// Decodes a datum written with `writer`, resolved into `reader`, and
    /// checks that every byte was consumed.
    fn read(
        writer: &KnownSchema,
        reader: &KnownSchema,
        datum: &[u8],
    ) -> Result<Vec<(String, Value)>, DecodeError> {
        if writer.full_name != reader.full_name {
            return Err(DecodeError::WrongSchema {
                found: writer.full_name.clone(),
                expected: reader.full_name.clone(),
            });
        }
        let mut cur = Cursor::new(datum);
        let resolve = (writer.fingerprint != reader.fingerprint).then_some(&reader.schema);
        guard::check_datum(&writer.schema, datum, &guard::GuardLimits::default())?;
        let value = apache_avro::from_avro_datum(&writer.schema, &mut cur, resolve)
            .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let used = cur.position() as usize;
        if used != datum.len() {
            return Err(DecodeError::Malformed(format!(
                "{} trailing bytes after the datum",
                datum.len() - used
            )));
        }
        match value {
            Value::Record(fields) => Ok(fields),
            other => Err(DecodeError::Malformed(format!(
                "expected a record, got {other:?}"
            ))),
        }
    }

    /// Decodes and validates a transaction from a Kafka key and payload.
    pub fn decode_transaction(
        &self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> Result<Transaction, DecodeError> {
        let payload = payload.ok_or(DecodeError::EmptyPayload)?;
        let (writer, datum) = self.frame(payload)?;
        let tx = if writer.fingerprint == self.transaction.fingerprint {
            // Hot path: the current schema, read by hand (no `Value` tree).
            decode_transaction_datum(datum)?
        } else {
            transaction_from(Fields(Self::read(&writer, &self.transaction, datum)?))?
        };
        match key {
            None | Some([]) => return Err(DecodeError::MissingKey),
            Some(k) if k != tx.customer_id.as_bytes() => {
                return Err(DecodeError::Invalid {
                    field: "key",
                    detail: format!(
                        "record key {:?} differs from customer_id {:?}",
                        String::from_utf8_lossy(k),
                        tx.customer_id
                    ),
                })
            }
            Some(_) => {}
        }
        validate_transaction(&tx)?;
        Ok(tx)
    }

    pub fn decode_label(&self, payload: Option<&[u8]>) -> Result<FraudLabel, DecodeError> {
        let payload = payload.ok_or(DecodeError::EmptyPayload)?;
        let (writer, datum) = self.frame(payload)?;
        if writer.fingerprint == self.label.fingerprint {
            return decode_label_datum(datum);
        }
        let mut f = Fields(Self::read(&writer, &self.label, datum)?);
        Ok(FraudLabel {
            transaction_id: f.string("transaction_id")?,
            customer_id: f.string("customer_id")?,
            terminal_id: f.string("terminal_id")?,
            event_time: f.long("event_time")?,
            is_fraud: f.boolean("is_fraud")?,
            reported_at: f.long("reported_at")?,
        })
    }

    pub fn decode_scored(&self, payload: Option<&[u8]>) -> Result<ScoredTransaction, DecodeError> {
        let payload = payload.ok_or(DecodeError::EmptyPayload)?;
        let (writer, datum) = self.frame(payload)?;
        let mut f = Fields(Self::read(&writer, &self.scored, datum)?);
        Ok(ScoredTransaction {
            transaction_id: f.string("transaction_id")?,
            event_time: f.long("event_time")?,
            customer_id: f.string("customer_id")?,
            terminal_id: f.string("terminal_id")?,
            amount: f.double("amount")?,
            currency: f.string("currency")?,
            score: f.float("score")?,
            is_fraud: f.boolean("is_fraud")?,
            threshold: f.float("threshold")?,
            model_name: f.string("model_name")?,
            model_version: f.string("model_version")?,
            scored_at: f.long("scored_at")?,
        })
    }

    /// Decodes any record written with a known schema into JSON (for `tail`).
    pub fn to_json(&self, payload: &[u8]) -> Result<serde_json::Value, DecodeError> {
        let (writer, datum) = self.frame(payload)?;
        let mut cur = Cursor::new(datum);
        guard::check_datum(&writer.schema, datum, &guard::GuardLimits::default())?;
        let value = apache_avro::from_avro_datum(&writer.schema, &mut cur, None)
            .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        serde_json::Value::try_from(value).map_err(|e| DecodeError::Malformed(e.to_string()))
    }

    fn encode_with(
        &self,
        schema: &KnownSchema,
        fields: Vec<(&str, Value)>,
        what: &'static str,
    ) -> Result<Vec<u8>, SchemaError> {
        let record = Value::Record(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        );
        let datum = apache_avro::to_avro_datum(&schema.schema, record).map_err(|e| {
            SchemaError::Encode {
                what,
                detail: e.to_string(),
            }
        })?;
        let mut out = Vec::with_capacity(HEADER_LEN + datum.len());
        self.header_of(schema, &mut out);
        out.extend_from_slice(&datum);
        Ok(out)
    }

    pub fn encode_transaction(&self, tx: &Transaction) -> Result<Vec<u8>, SchemaError> {
        self.encode_with(&self.transaction, transaction_fields(tx), "Transaction")
    }

    /// Encodes a transaction with an arbitrary registered writer schema: fields
    /// the schema lacks are left out, fields it adds must have defaults.
    pub fn encode_transaction_as(
        &self,
        writer: &KnownSchema,
        tx: &Transaction,
        extra: Vec<(&str, Value)>,
    ) -> Result<Vec<u8>, SchemaError> {
        let names: Vec<String> = match &writer.schema {
            Schema::Record(r) => r.fields.iter().map(|f| f.name.clone()).collect(),
            _ => Vec::new(),
        };
        let mut fields: Vec<(&str, Value)> = transaction_fields(tx)
            .into_iter()
            .chain(extra)
            .filter(|(k, _)| names.iter().any(|n| n == k))
            .collect();
        fields.sort_by_key(|(k, _)| names.iter().position(|n| n == k));
        self.encode_with(writer, fields, "Transaction")
    }

    /// Encodes a scored record. Hot path: written by hand in Avro's binary
    /// encoding (the test suite checks it byte for byte against the generic
    /// encoder), six times faster than going through `Value`.
    pub fn encode_scored(&self, s: &ScoredTransaction) -> Result<Vec<u8>, SchemaError> {
        Ok(self.write_scored(
            TxView {
                transaction_id: &s.transaction_id,
                event_time: s.event_time,
                customer_id: &s.customer_id,
                terminal_id: &s.terminal_id,
                amount: s.amount,
                currency: &s.currency,
            },
            &Verdict {
                score: s.score,
                is_fraud: s.is_fraud,
                threshold: s.threshold,
                model_name: &s.model_name,
                model_version: &s.model_version,
                scored_at: s.scored_at,
            },
        ))
    }

    /// The scored record of `tx` with verdict `v`, written straight from
    /// the parts (the worker's hot path).
    pub fn encode_scored_from(&self, tx: &Transaction, v: &Verdict<'_>) -> Vec<u8> {
        self.write_scored(
            TxView {
                transaction_id: &tx.transaction_id,
                event_time: tx.event_time,
                customer_id: &tx.customer_id,
                terminal_id: &tx.terminal_id,
                amount: tx.amount,
                currency: &tx.currency,
            },
            v,
        )
    }

    fn write_scored(&self, tx: TxView<'_>, v: &Verdict<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 64 + tx.transaction_id.len());
        self.header_of(&self.scored, &mut out);
        put_str(&mut out, tx.transaction_id);
        put_long(&mut out, tx.event_time);
        put_str(&mut out, tx.customer_id);
        put_str(&mut out, tx.terminal_id);
        out.extend_from_slice(&tx.amount.to_le_bytes());
        put_str(&mut out, tx.currency);
        out.extend_from_slice(&v.score.to_le_bytes());
        out.push(u8::from(v.is_fraud));
        out.extend_from_slice(&v.threshold.to_le_bytes());
        put_str(&mut out, v.model_name);
        put_str(&mut out, v.model_version);
        put_long(&mut out, v.scored_at);
        out
    }

    /// The generic (`Value`-based) encoding of a scored record.
    pub fn encode_scored_generic(&self, s: &ScoredTransaction) -> Result<Vec<u8>, SchemaError> {
        let fields = vec![
            ("transaction_id", Value::String(s.transaction_id.clone())),
            ("event_time", Value::TimestampMillis(s.event_time)),
            ("customer_id", Value::String(s.customer_id.clone())),
            ("terminal_id", Value::String(s.terminal_id.clone())),
            ("amount", Value::Double(s.amount)),
            ("currency", Value::String(s.currency.clone())),
            ("score", Value::Float(s.score)),
            ("is_fraud", Value::Boolean(s.is_fraud)),
            ("threshold", Value::Float(s.threshold)),
            ("model_name", Value::String(s.model_name.clone())),
            ("model_version", Value::String(s.model_version.clone())),
            ("scored_at", Value::TimestampMillis(s.scored_at)),
        ];
        self.encode_with(&self.scored, fields, "ScoredTransaction")
    }

    pub fn encode_label(&self, l: &FraudLabel) -> Result<Vec<u8>, SchemaError> {
        let fields = vec![
            ("transaction_id", Value::String(l.transaction_id.clone())),
            ("customer_id", Value::String(l.customer_id.clone())),
            ("terminal_id", Value::String(l.terminal_id.clone())),
            ("event_time", Value::TimestampMillis(l.event_time)),
            ("is_fraud", Value::Boolean(l.is_fraud)),
            ("reported_at", Value::TimestampMillis(l.reported_at)),
        ];
        self.encode_with(&self.label, fields, "FraudLabel")
    }
}

fn transaction_fields(tx: &Transaction) -> Vec<(&'static str, Value)> {
    vec![
        ("transaction_id", Value::String(tx.transaction_id.clone())),
        ("event_time", Value::TimestampMillis(tx.event_time)),
        ("customer_id", Value::String(tx.customer_id.clone())),
        ("terminal_id", Value::String(tx.terminal_id.clone())),
        ("amount", Value::Double(tx.amount)),
        ("currency", Value::String(tx.currency.clone())),
    ]
}

/// Avro `long`: zig-zag, then base-128 varint.
pub fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Avro `string`: length as a long, then UTF-8 bytes.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// A bounds-checked reader of Avro binary encoding.
struct AvroReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> AvroReader<'a> {
    fn malformed(&self, what: &str) -> DecodeError {
        DecodeError::Malformed(format!("{what} at byte {}", self.pos))
    }

    fn long(&mut self) -> Result<i64, DecodeError> {
        let mut z: u64 = 0;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| self.malformed("truncated long"))?;
            self.pos += 1;
            z |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err(self.malformed("long longer than 10 bytes"))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.long()?;
        let n = usize::try_from(n).map_err(|_| self.malformed("negative string length"))?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| self.malformed("string runs past the end"))?;
        let s = std::str::from_utf8(&self.buf[self.pos..end])
            .map_err(|_| self.malformed("string is not UTF-8"))?
            .to_string();
        self.pos = end;
        Ok(s)
    }

    /// `value` if every byte was read.
    fn finish<T>(self, value: T) -> Result<T, DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(value),
            n => Err(DecodeError::Malformed(format!(
                "{n} trailing bytes after the datum"
            ))),
        }
    }

    fn boolean(&mut self) -> Result<bool, DecodeError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.malformed("truncated boolean"))?;
        self.pos += 1;
        match b {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.malformed("boolean is neither 0 nor 1")),
        }
    }

    fn double(&mut self) -> Result<f64, DecodeError> {
        let b: [u8; 8] = self
            .buf
            .get(self.pos..self.pos + 8)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| self.malformed("truncated double"))?;
        self.pos += 8;
        Ok(f64::from_le_bytes(b))
    }
}

/// A datum of the current `schemas/transaction.avsc`, read field by field
/// (the test suite checks it against the generic decoder).
fn decode_transaction_datum(datum: &[u8]) -> Result<Transaction, DecodeError> {
    let mut r = AvroReader { buf: datum, pos: 0 };
    let tx = Transaction {
        transaction_id: r.string()?,
        event_time: r.long()?,
        customer_id: r.string()?,
        terminal_id: r.string()?,
        amount: r.double()?,
        currency: r.string()?,
    };
    r.finish(tx)
}

/// A datum of the current `schemas/fraud_label.avsc`, read field by field.
fn decode_label_datum(datum: &[u8]) -> Result<FraudLabel, DecodeError> {
    let mut r = AvroReader { buf: datum, pos: 0 };
    let l = FraudLabel {
        transaction_id: r.string()?,
        customer_id: r.string()?,
        terminal_id: r.string()?,
        event_time: r.long()?,
        is_fraud: r.boolean()?,
        reported_at: r.long()?,
    };
    r.finish(l)
}

/// The generic (`Value`-based) decoding of a current-schema transaction datum.
pub fn decode_transaction_generic(
    codec: &Codec,
    payload: &[u8],
) -> Result<Transaction, DecodeError> {
    let (writer, datum) = codec.frame(payload)?;
    transaction_from(Fields(Codec::read(&writer, &codec.transaction, datum)?))
}

/// A transaction from a decoded record's fields (any resolved writer schema).
fn transaction_from(mut f: Fields) -> Result<Transaction, DecodeError> {
    Ok(Transaction {
        transaction_id: f.string("transaction_id")?,
        event_time: f.long("event_time")?,
        customer_id: f.string("customer_id")?,
        terminal_id: f.string("terminal_id")?,
        amount: f.double("amount")?,
        currency: f.string("currency")?,
    })
}

/// Business validation of a decoded transaction.
pub fn validate_transaction(tx: &Transaction) -> Result<(), DecodeError> {
    let invalid = |field, detail: &str| {
        Err(DecodeError::Invalid {
            field,
            detail: detail.to_string(),
        })
    };
    if tx.transaction_id.is_empty() {
        return invalid("transaction_id", "empty");
    }
    if tx.customer_id.is_empty() {
        return invalid("customer_id", "empty");
    }
    if tx.terminal_id.is_empty() {
        return invalid("terminal_id", "empty");
    }
    if !tx.amount.is_finite() {
        return Err(DecodeError::InvalidAmount(format!(
            "{} is not a finite number",
            tx.amount
        )));
    }
    if tx.amount < 0.0 {
        return Err(DecodeError::InvalidAmount(format!(
            "{} is negative",
            tx.amount
        )));
    }
    if tx.event_time <= 0 {
        return Err(DecodeError::EventTimeOutOfRange(format!(
            "{} is not a valid epoch-ms time",
            tx.event_time
        )));
    }
    Ok(())
}

/// Field access on a resolved record, by name.
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn take(&mut self, name: &'static str) -> Result<Value, DecodeError> {
        self.0
            .iter_mut()
            .find(|(k, _)| k == name)
            .map(|(_, v)| std::mem::replace(v, Value::Null))
            .ok_or(DecodeError::Invalid {
                field: name,
                detail: "missing".into(),
            })
    }
    fn wrong(name: &'static str, v: &Value) -> DecodeError {
        DecodeError::Invalid {
            field: name,
            detail: format!("unexpected value {v:?}"),
        }
    }
    fn string(&mut self, name: &'static str) -> Result<String, DecodeError> {
        match self.take(name)? {
            Value::String(s) => Ok(s),
            v => Err(Self::wrong(name, &v)),
        }
    }
    fn long(&mut self, name: &'static str) -> Result<i64, DecodeError> {
        match self.take(name)? {
            Value::Long(x) | Value::TimestampMillis(x) => Ok(x),
            Value::Int(x) => Ok(x as i64),
            v => Err(Self::wrong(name, &v)),
        }
    }
    fn double(&mut self, name: &'static str) -> Result<f64, DecodeError> {
        match self.take(name)? {
            Value::Double(x) => Ok(x),
            Value::Float(x) => Ok(x as f64),
            v => Err(Self::wrong(name, &v)),
        }
    }
    fn float(&mut self, name: &'static str) -> Result<f32, DecodeError> {
        match self.take(name)? {
            Value::Float(x) => Ok(x),
            Value::Double(x) => Ok(x as f32),
            v => Err(Self::wrong(name, &v)),
        }
    }
    fn boolean(&mut self, name: &'static str) -> Result<bool, DecodeError> {
        match self.take(name)? {
            Value::Boolean(x) => Ok(x),
            v => Err(Self::wrong(name, &v)),
        }
    }
}

#[cfg(test)]
mod tests;
