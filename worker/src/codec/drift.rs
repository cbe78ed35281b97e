//! The drift sidecar's records: `DriftReport` (`schemas/drift_report.avsc`)
//! on the drift topic, and `DriftSlice` and `PerformanceReport`
//! (`drift_slice.avsc`, `performance_report.avsc`) on `<drift topic>.slices`
//! (performance reports also on the drift topic). One struct per record,
//! its fields named and ordered as in the schema (`codec/tests.rs` checks
//! them against it). Reports and slices are written by hand (one per
//! quarter hour of event time and instance: a catch-up writes thousands a
//! second), checked byte for byte against the generic encoder; performance
//! reports (one a day) through serde by the schema-aware serializer. All
//! are read through schema resolution and serde, never field by field.

use apache_avro::types::Value;
use serde::{Deserialize, Serialize};

use super::{put_long, put_str, Codec, DecodeError, KnownSchema, SchemaError};

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
    Performance(Box<PerformanceReport>),
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

    /// A drift report. Written by hand in Avro's binary encoding, like the
    /// scored record: one goes out per instance and quarter hour of event
    /// time, a catch-up over history closes thousands a second, and the
    /// schema-aware serializer cost as much as the rest of the sidecar
    /// (benches/results/2026-12-07-issue26/breakdown.md). The tests check
    /// it byte for byte against the generic encoder.
    pub fn encode_drift(&self, r: &DriftReport) -> Result<Vec<u8>, SchemaError> {
        let mut out = Vec::with_capacity(256 + 160 * r.variables.len());
        self.header_of(&self.drift, &mut out);
        r.write(&mut out);
        Ok(out)
    }

    /// A drift slice, written by hand like [`Self::encode_drift`].
    pub fn encode_drift_slice(&self, s: &DriftSlice) -> Result<Vec<u8>, SchemaError> {
        let mut out = Vec::with_capacity(128 + 96 * s.variables.len());
        self.header_of(&self.drift_slice, &mut out);
        s.write(&mut out);
        Ok(out)
    }

    pub fn encode_performance(&self, r: &PerformanceReport) -> Result<Vec<u8>, SchemaError> {
        self.encode_serde(&self.performance, r, "PerformanceReport")
    }

    /// A record of the slices topic, by its writer schema: a drift slice or
    /// a performance report (anything else is `WrongSchema`).
    pub fn decode_slices_record(&self, payload: &[u8]) -> Result<SlicesRecord, DecodeError> {
        let (writer, datum) = self.frame(payload)?;
        if writer.full_name == self.performance.full_name {
            let fields = Self::read(&writer, &self.performance, datum)?;
            return Ok(SlicesRecord::Performance(Box::new(from_record(fields)?)));
        }
        Ok(SlicesRecord::Slice(from_record(Self::read(
            &writer,
            &self.drift_slice,
            datum,
        )?)?))
    }
}

/// Avro's binary encoding of the drift records, field by field in the
/// schemas' order.
fn put_double(out: &mut Vec<u8>, x: f64) {
    out.extend_from_slice(&x.to_le_bytes());
}

fn put_bool(out: &mut Vec<u8>, b: bool) {
    out.push(u8::from(b));
}

/// `["null", "double"]`: the branch, then the value.
fn put_opt_double(out: &mut Vec<u8>, x: Option<f64>) {
    match x {
        None => out.push(0),
        Some(x) => {
            out.push(2); // zig-zag of branch 1
            put_double(out, x);
        }
    }
}

/// An array as one block (count, items) and the end marker.
fn put_array<T>(out: &mut Vec<u8>, items: &[T], mut put: impl FnMut(&mut Vec<u8>, &T)) {
    if !items.is_empty() {
        put_long(out, items.len() as i64);
        for i in items {
            put(out, i);
        }
    }
    out.push(0);
}

fn put_strings(out: &mut Vec<u8>, items: &[String]) {
    put_array(out, items, |o, s| put_str(o, s));
}

impl DriftReport {
    fn write(&self, out: &mut Vec<u8>) {
        put_str(out, &self.model_name);
        put_str(out, &self.model_version);
        put_str(out, &self.instance);
        for x in [
            self.window_index,
            self.window_start,
            self.window_end,
            self.decided_at,
            self.records,
        ] {
            put_long(out, x);
        }
        put_bool(out, self.judged);
        put_long(out, self.samples_dropped);
        put_long(out, self.late_records);
        put_double(out, self.flagged_rate);
        put_double(out, self.reference_flagged_rate);
        put_array(out, &self.variables, |o, v| {
            put_str(o, &v.name);
            put_str(o, &v.kind);
            put_array(o, &v.scales, |o, s| s.write(o));
            put_strings(o, &v.over);
            put_bool(o, v.alerting);
        });
        put_strings(out, &self.raised);
        put_strings(out, &self.cleared);
        put_strings(out, &self.active);
        put_long(out, self.emitted_at);
    }
}

impl ScaleDrift {
    fn write(&self, out: &mut Vec<u8>) {
        put_long(out, self.scale_seconds);
        put_long(out, self.records);
        put_bool(out, self.judged);
        for x in [
            self.mean,
            self.expected_mean,
            self.effect,
            self.z,
            self.z_low,
            self.z_high,
        ] {
            put_double(out, x);
        }
        put_opt_double(out, self.chi2);
        put_opt_double(out, self.chi2_limit);
        put_opt_double(out, self.psi);
        put_strings(out, &self.over);
    }
}

impl DriftSlice {
    fn write(&self, out: &mut Vec<u8>) {
        put_str(out, &self.model_name);
        put_str(out, &self.model_version);
        put_str(out, &self.instance);
        put_long(out, self.slice_start);
        put_long(out, self.records);
        put_array(out, &self.variables, |o, v| {
            put_str(o, &v.name);
            put_long(o, v.n);
            put_double(o, v.sum);
            put_double(o, v.sum_of_squares);
            put_array(o, &v.bins, |o, b| put_long(o, *b));
        });
    }
}

/// A resolved record's fields as `T`.
fn from_record<T: for<'de> Deserialize<'de>>(
    fields: Vec<(String, Value)>,
) -> Result<T, DecodeError> {
    apache_avro::from_value(&Value::Record(fields))
        .map_err(|e| DecodeError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use apache_avro::types::Value;
    use apache_avro::Schema;
    use serde::Serialize;

    use super::*;

    /// The field names of `schema`'s records, depth first.
    fn field_names(schema: &Schema, out: &mut Vec<String>) {
        match schema {
            Schema::Record(r) => {
                for f in &r.fields {
                    out.push(f.name.clone());
                    field_names(&f.schema, out);
                }
            }
            Schema::Array(a) => field_names(&a.items, out),
            _ => {}
        }
    }

    /// The field names of a serialised value (the first item of each
    /// array), depth first.
    fn value_names(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Record(fields) => {
                for (k, v) in fields {
                    out.push(k.clone());
                    value_names(v, out);
                }
            }
            Value::Array(items) => items.iter().take(1).for_each(|v| value_names(v, out)),
            _ => {}
        }
    }

    fn report() -> DriftReport {
        let scale = |s: i64, chi2: Option<f64>| ScaleDrift {
            scale_seconds: s,
            records: 1200,
            judged: true,
            mean: 51.5,
            expected_mean: 50.0,
            effect: 0.1,
            z: 3.5,
            z_low: -5.9,
            z_high: 6.1,
            chi2,
            chi2_limit: chi2.map(|x| x + 40.0),
            psi: None,
            over: vec!["mean".into()],
        };
        DriftReport {
            model_name: "fraud-mlp".into(),
            model_version: "1".into(),
            instance: "w-1".into(),
            window_index: 7,
            window_start: 1_534_723_200_000,
            window_end: 1_534_724_100_000,
            decided_at: 1_534_724_160_000,
            records: 300,
            judged: true,
            samples_dropped: 2,
            late_records: 0,
            flagged_rate: 0.01,
            reference_flagged_rate: 0.012,
            variables: vec![
                VariableDrift {
                    name: "TX_AMOUNT".into(),
                    kind: "continuous".into(),
                    scales: vec![scale(3600, Some(12.5)), scale(21_600, None)],
                    over: vec!["mean@1h".into()],
                    alerting: true,
                },
                VariableDrift {
                    name: "FLAGGED".into(),
                    kind: "binary".into(),
                    scales: vec![ScaleDrift {
                        z: -70.25,
                        psi: Some(0.031),
                        over: Vec::new(),
                        records: 0,
                        ..scale(86_400, None)
                    }],
                    over: Vec::new(),
                    alerting: false,
                },
                VariableDrift {
                    name: "ÜBER_ÉTÉ".into(),
                    kind: String::new(),
                    scales: Vec::new(),
                    over: Vec::new(),
                    alerting: false,
                },
            ],
            raised: vec!["TX_AMOUNT".into()],
            cleared: vec!["FLAGGED".into(), "SCORE".into()],
            active: vec!["TX_AMOUNT".into()],
            emitted_at: 1_700_000_000_000,
        }
    }

    fn slice() -> DriftSlice {
        DriftSlice {
            model_name: "fraud-mlp".into(),
            model_version: "1".into(),
            instance: "w-1".into(),
            slice_start: 1_534_723_200_000,
            records: 300,
            variables: vec![
                VariableSummary {
                    name: "TX_AMOUNT".into(),
                    n: 300,
                    sum: 15_000.5,
                    sum_of_squares: 900_000.25,
                    bins: vec![30, 31, 29, 0, 1 << 40],
                },
                VariableSummary {
                    name: "FLAGGED".into(),
                    n: 0,
                    sum: -0.0,
                    sum_of_squares: 0.0,
                    bins: Vec::new(),
                },
            ],
        }
    }

    fn performance() -> PerformanceReport {
        PerformanceReport {
            model_name: "fraud-mlp".into(),
            model_version: "1".into(),
            instance: "global".into(),
            day_start: 1_534_723_200_000,
            labelled: 5.0,
            positives: 2.0,
            true_positives: 1.0,
            false_positives: 0.0,
            sample_rate: 1.0,
            precision: Some(1.0),
            recall: Some(0.5),
            f1: None,
            auc_roc: Some(0.9),
            average_precision: None,
            validation_auc_roc: Some(0.88),
            validation_average_precision: Some(0.7),
            validation_f1: None,
            margin: 0.15,
            judged: true,
            below: vec!["f1".into()],
            raised: false,
            cleared: true,
            alerting: false,
            score_bins: vec![ScoreBin {
                bin: 200,
                positives: 1.0,
                negatives: 3.0,
            }],
            emitted_at: 1_700_000_000_000,
        }
    }

    /// The struct's fields are the schema's, in its order, and the
    /// serde-written datum is the generic encoder's byte for byte.
    fn check<T: Serialize>(schema: &KnownSchema, record: &T, encoded: &[u8]) {
        let value = apache_avro::to_value(record).unwrap();
        let (mut want, mut got) = (Vec::new(), Vec::new());
        field_names(&schema.schema, &mut want);
        value_names(&value, &mut got);
        assert_eq!(got, want, "{}", schema.full_name);
        let generic =
            apache_avro::to_avro_datum(&schema.schema, value.resolve(&schema.schema).unwrap())
                .unwrap();
        assert_eq!(&encoded[super::super::HEADER_LEN..], generic.as_slice());
        assert_eq!(encoded[..super::super::HEADER_LEN], schema.header());
    }

    #[test]
    fn drift_records_follow_their_schemas_and_read_back() {
        let c = Codec::new().unwrap();
        let (r, s, p) = (report(), slice(), performance());
        let (er, es, ep) = (
            c.encode_drift(&r).unwrap(),
            c.encode_drift_slice(&s).unwrap(),
            c.encode_performance(&p).unwrap(),
        );
        check(&c.drift, &r, &er);
        check(&c.drift_slice, &s, &es);
        check(&c.performance, &p, &ep);
        assert_eq!(c.decode_slices_record(&es), Ok(SlicesRecord::Slice(s)));
        assert_eq!(
            c.decode_slices_record(&ep),
            Ok(SlicesRecord::Performance(Box::new(p)))
        );
        assert_eq!(
            c.to_json(&er).unwrap()["variables"][0]["scales"][1]["chi2"],
            serde_json::Value::Null
        );
        assert_eq!(
            c.decode_slices_record(&er).map_err(|e| e.reason()),
            Err("wrong_schema")
        );
    }
}
