//! The drift sidecar's records: `DriftReport` (`schemas/drift_report.avsc`)
//! on the drift topic, and `DriftSlice` and `PerformanceReport`
//! (`drift_slice.avsc`, `performance_report.avsc`) on `<drift topic>.slices`
//! (performance reports also on the drift topic). One struct per record,
//! its fields named and ordered as in the schema (`codec/tests.rs` checks
//! them against it): written through serde by the schema-aware serializer,
//! read through schema resolution and serde, never field by field.

use apache_avro::types::Value;
use serde::{Deserialize, Serialize};

use super::{Codec, DecodeError, KnownSchema, SchemaError};

/// One drift evaluation of one instance (or "global", the merged verdict).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    pub model_name: String,
    pub model_version: String,
    pub instance: String,
    pub window_index: i64,
    pub window_start: i64,
    pub window_end: i64,
    pub decided_at: i64,
    pub records: i64,
    pub judged: bool,
    pub samples_dropped: i64,
    pub late_records: i64,
    pub flagged_rate: f64,
    pub reference_flagged_rate: f64,
    pub variables: Vec<VariableDrift>,
    pub raised: Vec<String>,
    pub cleared: Vec<String>,
    pub active: Vec<String>,
    pub emitted_at: i64,
}

/// One watched variable in a [`DriftReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariableDrift {
    pub name: String,
    pub kind: String,
    pub scales: Vec<ScaleDrift>,
    pub over: Vec<String>,
    pub alerting: bool,
}

/// One window scale of a [`VariableDrift`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleDrift {
    pub scale_seconds: i64,
    pub records: i64,
    pub judged: bool,
    pub mean: f64,
    pub expected_mean: f64,
    pub effect: f64,
    pub z: f64,
    pub z_low: f64,
    pub z_high: f64,
    pub chi2: Option<f64>,
    pub chi2_limit: Option<f64>,
    pub psi: Option<f64>,
    pub over: Vec<String>,
}

/// One instance's summary of one closed drift slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftSlice {
    pub model_name: String,
    pub model_version: String,
    pub instance: String,
    pub slice_start: i64,
    pub records: i64,
    pub variables: Vec<VariableSummary>,
}

/// One watched variable in a [`DriftSlice`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariableSummary {
    pub name: String,
    pub n: i64,
    pub sum: f64,
    pub sum_of_squares: f64,
    pub bins: Vec<i64>,
}

/// Realised performance of one model version on one event day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerformanceReport {
    pub model_name: String,
    pub model_version: String,
    pub instance: String,
    pub day_start: i64,
    pub labelled: f64,
    pub positives: f64,
    pub true_positives: f64,
    pub false_positives: f64,
    pub sample_rate: f64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    pub auc_roc: Option<f64>,
    pub average_precision: Option<f64>,
    pub validation_auc_roc: Option<f64>,
    pub validation_average_precision: Option<f64>,
    pub validation_f1: Option<f64>,
    pub margin: f64,
    pub judged: bool,
    pub below: Vec<String>,
    pub raised: bool,
    pub cleared: bool,
    pub alerting: bool,
    pub score_bins: Vec<ScoreBin>,
    pub emitted_at: i64,
}

/// A non-empty bin of a [`PerformanceReport`]'s score histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreBin {
    pub bin: i32,
    pub positives: f64,
    pub negatives: f64,
}

/// A record of `<drift topic>.slices`.
#[derive(Debug, Clone, PartialEq)]
pub enum SlicesRecord {
    Slice(DriftSlice),
    Performance(PerformanceReport),
}

impl Codec {
    /// `record` with the header of `schema`, written by the schema-aware
    /// serializer (fields in the schema's order).
    fn encode_serde<T: Serialize>(
        &self,
        schema: &KnownSchema,
        record: &T,
        what: &'static str,
    ) -> Result<Vec<u8>, SchemaError> {
        let mut out = Vec::with_capacity(256);
        self.header_of(schema, &mut out);
        apache_avro::write_avro_datum_ref(&schema.schema, record, &mut out).map_err(|e| {
            SchemaError::Encode {
                what,
                detail: e.to_string(),
            }
        })?;
        Ok(out)
    }

    pub fn encode_drift(&self, r: &DriftReport) -> Result<Vec<u8>, SchemaError> {
        self.encode_serde(&self.drift, r, "DriftReport")
    }

    pub fn encode_drift_slice(&self, s: &DriftSlice) -> Result<Vec<u8>, SchemaError> {
        self.encode_serde(&self.drift_slice, s, "DriftSlice")
    }

    pub fn encode_performance(&self, r: &PerformanceReport) -> Result<Vec<u8>, SchemaError> {
        self.encode_serde(&self.performance, r, "PerformanceReport")
    }

    /// A record of the slices topic, by its writer schema: a drift slice or
    /// a performance report (anything else is `WrongSchema`).
    pub fn decode_slices_record(&self, payload: &[u8]) -> Result<SlicesRecord, DecodeError> {
        let (writer, datum) = self.frame(payload)?;
        if writer.full_name == self.performance.full_name {
            return Ok(SlicesRecord::Performance(from_record(Self::read(
                &writer,
                &self.performance,
                datum,
            )?)?));
        }
        Ok(SlicesRecord::Slice(from_record(Self::read(
            &writer,
            &self.drift_slice,
            datum,
        )?)?))
    }
}

/// A resolved record's fields as `T`.
fn from_record<T: for<'de> Deserialize<'de>>(
    fields: Vec<(String, Value)>,
) -> Result<T, DecodeError> {
    apache_avro::from_value(&Value::Record(fields))
        .map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// The field names of `schema`'s records, depth first, for the tests that
/// hold the structs to the schemas.
#[cfg(test)]
pub(crate) fn field_names(schema: &apache_avro::Schema, out: &mut Vec<String>) {
    use apache_avro::Schema;
    match schema {
        Schema::Record(r) => {
            for f in &r.fields {
                out.push(f.name.clone());
                field_names(&f.schema, out);
            }
        }
        Schema::Array(a) => field_names(&a.items, out),
        Schema::Union(u) => u.variants().iter().for_each(|s| field_names(s, out)),
        _ => {}
    }
}

/// The field names of a serialised value, depth first.
#[cfg(test)]
pub(crate) fn value_names(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Record(fields) => {
            for (k, v) in fields {
                out.push(k.clone());
                value_names(v, out);
            }
        }
        Value::Array(items) => {
            if let Some(first) = items.first() {
                value_names(first, out);
            }
        }
        Value::Union(_, v) => value_names(v, out),
        _ => {}
    }
}
