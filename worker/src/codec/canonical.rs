//! The Avro specification's Parsing Canonical Form and its 64-bit Rabin
//! fingerprint (CRC-64-AVRO), the fingerprint of single-object encoding.
//!
//! Written from the specification ("Parsing Canonical Form for Schemas",
//! "Schema Fingerprints") over the schema's JSON, not over a parsed
//! `apache_avro::Schema`: apache-avro 0.21 strips `logicalType` but leaves
//! `{"type":"long"}` instead of reducing it to `"long"`, so every schema with
//! a logical type got a fingerprint no other Avro implementation computes.
//! Checked against the specification's own vectors
//! (`tests/fixtures/avro/schema-tests.txt`) and fingerprints computed by
//! fastavro (`tests/fixtures/avro/fastavro.json`).

use std::collections::HashSet;

use serde_json::Value;

/// Why a schema has no canonical form.
#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    #[error("schema is not JSON")]
    Json(#[source] serde_json::Error),
    #[error("schema nests deeper than {0} levels")]
    TooDeep(usize),
    #[error("invalid schema: {0}")]
    Invalid(String),
}

/// Deepest nesting accepted (a deeper schema is refused, not recursed into).
pub const MAX_DEPTH: usize = 64;

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// The Parsing Canonical Form of a schema given as JSON text.
pub fn canonical_form(schema_json: &str) -> Result<String, CanonicalError> {
    let v: Value = serde_json::from_str(schema_json).map_err(CanonicalError::Json)?;
    let mut w = CanonicalWriter {
        defined: HashSet::new(),
        out: String::with_capacity(schema_json.len()),
    };
    w.write(&v, "", 0)?;
    Ok(w.out)
}

/// CRC-64-AVRO of the canonical form: the fingerprint in single-object
/// headers (written there little-endian).
pub fn fingerprint(schema_json: &str) -> Result<u64, CanonicalError> {
    Ok(crc64_avro(canonical_form(schema_json)?.as_bytes()))
}

const EMPTY: u64 = 0xc15d_213a_a4d7_a795;

const fn table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut j = 0;
        while j < 8 {
            fp = (fp >> 1) ^ (EMPTY & (0u64.wrapping_sub(fp & 1)));
            j += 1;
        }
        t[i] = fp;
        i += 1;
    }
    t
}

static TABLE: [u64; 256] = table();

/// The specification's 64-bit Rabin fingerprint of `bytes`.
pub fn crc64_avro(bytes: &[u8]) -> u64 {
    let mut fp = EMPTY;
    for b in bytes {
        fp = (fp >> 8) ^ TABLE[((fp ^ u64::from(*b)) & 0xff) as usize];
    }
    fp
}

/// `name` resolved against the enclosing namespace.
fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}.{name}")
    }
}

/// The namespace part of a full name.
fn namespace_of(full: &str) -> &str {
    full.rsplit_once('.').map_or("", |(ns, _)| ns)
}

fn push_json_str(out: &mut String, s: &str) {
    // serde_json escapes only quotes, backslashes and control characters:
    // other characters stay UTF-8, as [STRINGS] asks.
    out.push_str(&Value::String(s.to_string()).to_string());
}

fn str_field<'a>(
    o: &'a serde_json::Map<String, Value>,
    key: &str,
) -> Result<&'a str, CanonicalError> {
    o.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| CanonicalError::Invalid(format!("missing or non-string \"{key}\"")))
}

/// The full name of a named type's definition (its `name`, qualified by its
/// `namespace` attribute or the enclosing one).
fn defined_name(
    o: &serde_json::Map<String, Value>,
    enclosing: &str,
) -> Result<String, CanonicalError> {
    let name = str_field(o, "name")?;
    let ns = match o.get("namespace") {
        Some(Value::String(ns)) => ns.as_str(),
        Some(Value::Null) | None => enclosing,
        Some(_) => return Err(CanonicalError::Invalid("non-string \"namespace\"".into())),
    };
    Ok(full_name(name, ns))
}

/// The canonical form being written, with the full names of the named types
/// defined so far (a short reference resolves against them).
struct CanonicalWriter {
    defined: HashSet<String>,
    out: String,
}

impl CanonicalWriter {
    fn write(&mut self, v: &Value, ns: &str, depth: usize) -> Result<(), CanonicalError> {
        if depth > MAX_DEPTH {
            return Err(CanonicalError::TooDeep(MAX_DEPTH));
        }
        match v {
            // [PRIMITIVES] and references to named types by [FULLNAMES].
            Value::String(s) if PRIMITIVES.contains(&s.as_str()) => push_json_str(&mut self.out, s),
            Value::String(s) => self.write_reference(s, ns),
            // A union.
            Value::Array(branches) => {
                self.out.push('[');
                for (i, b) in branches.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.write(b, ns, depth + 1)?;
                }
                self.out.push(']');
            }
            Value::Object(o) => self.write_object(o, ns, depth)?,
            other => {
                return Err(CanonicalError::Invalid(format!(
                    "unexpected {other} as a schema"
                )))
            }
        }
        Ok(())
    }

    /// A reference to a named type, by its full name.
    fn write_reference(&mut self, s: &str, ns: &str) {
        let qualified = full_name(s, ns);
        // A short name that is not defined in this namespace but is in
        // the null namespace refers to that one.
        let name = if !self.defined.contains(&qualified) && self.defined.contains(s) {
            s.to_string()
        } else {
            qualified
        };
        push_json_str(&mut self.out, &name);
    }

    fn write_object(
        &mut self,
        o: &serde_json::Map<String, Value>,
        ns: &str,
        depth: usize,
    ) -> Result<(), CanonicalError> {
        let ty = match o.get("type") {
            Some(Value::String(t)) => t.as_str(),
            // `{"type": {...}}` or `{"type": [...]}`: the inner schema.
            Some(inner @ (Value::Object(_) | Value::Array(_))) => {
                return self.write(inner, ns, depth + 1)
            }
            _ => return Err(CanonicalError::Invalid("object without a \"type\"".into())),
        };
        match ty {
            // [STRIP]: a primitive with attributes (logicalType among them) is
            // the primitive.
            t if PRIMITIVES.contains(&t) => push_json_str(&mut self.out, t),
            "record" | "error" => self.write_record(o, ns, depth)?,
            "enum" => self.write_enum(o, ns)?,
            "fixed" => self.write_fixed(o, ns)?,
            "array" => {
                self.out.push_str("{\"type\":\"array\",\"items\":");
                let items = o
                    .get("items")
                    .ok_or_else(|| CanonicalError::Invalid("array without items".into()))?;
                self.write(items, ns, depth + 1)?;
                self.out.push('}');
            }
            "map" => {
                self.out.push_str("{\"type\":\"map\",\"values\":");
                let values = o
                    .get("values")
                    .ok_or_else(|| CanonicalError::Invalid("map without values".into()))?;
                self.write(values, ns, depth + 1)?;
                self.out.push('}');
            }
            // `{"type": "SomeNamedType"}`: a reference.
            other => self.write(&Value::String(other.to_string()), ns, depth + 1)?,
        }
        Ok(())
    }

    /// Records the definition of a named type; returns its full name.
    fn define(
        &mut self,
        o: &serde_json::Map<String, Value>,
        ns: &str,
    ) -> Result<String, CanonicalError> {
        let name = defined_name(o, ns)?;
        self.defined.insert(name.clone());
        Ok(name)
    }

    fn write_record(
        &mut self,
        o: &serde_json::Map<String, Value>,
        ns: &str,
        depth: usize,
    ) -> Result<(), CanonicalError> {
        let name = self.define(o, ns)?;
        self.out.push_str("{\"name\":");
        push_json_str(&mut self.out, &name);
        self.out.push_str(",\"type\":\"record\",\"fields\":[");
        let fields = o
            .get("fields")
            .and_then(Value::as_array)
            .ok_or_else(|| CanonicalError::Invalid(format!("record {name} without fields")))?;
        let inner_ns = namespace_of(&name).to_string();
        for (i, f) in fields.iter().enumerate() {
            let f = f.as_object().ok_or_else(|| {
                CanonicalError::Invalid(format!("a field of {name} is not an object"))
            })?;
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str("{\"name\":");
            push_json_str(&mut self.out, str_field(f, "name")?);
            self.out.push_str(",\"type\":");
            let ft = f
                .get("type")
                .ok_or_else(|| CanonicalError::Invalid(format!("a field of {name} has no type")))?;
            self.write(ft, &inner_ns, depth + 1)?;
            self.out.push('}');
        }
        self.out.push_str("]}");
        Ok(())
    }

    fn write_enum(
        &mut self,
        o: &serde_json::Map<String, Value>,
        ns: &str,
    ) -> Result<(), CanonicalError> {
        let name = self.define(o, ns)?;
        self.out.push_str("{\"name\":");
        push_json_str(&mut self.out, &name);
        self.out.push_str(",\"type\":\"enum\",\"symbols\":[");
        let symbols = o
            .get("symbols")
            .and_then(Value::as_array)
            .ok_or_else(|| CanonicalError::Invalid(format!("enum {name} without symbols")))?;
        for (i, s) in symbols.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let s = s.as_str().ok_or_else(|| {
                CanonicalError::Invalid(format!("a symbol of {name} is not a string"))
            })?;
            push_json_str(&mut self.out, s);
        }
        self.out.push_str("]}");
        Ok(())
    }

    fn write_fixed(
        &mut self,
        o: &serde_json::Map<String, Value>,
        ns: &str,
    ) -> Result<(), CanonicalError> {
        let name = self.define(o, ns)?;
        // [INTEGERS]: no quotes, no leading zeros.
        let size = match o.get("size") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
            _ => None,
        }
        .ok_or_else(|| CanonicalError::Invalid(format!("fixed {name} without a size")))?;
        self.out.push_str("{\"name\":");
        push_json_str(&mut self.out, &name);
        self.out
            .push_str(&format!(",\"type\":\"fixed\",\"size\":{size}}}"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's vectors: `<<INPUT`, `<<canonical`, `<<fingerprint`
    /// (a signed 64-bit number) per case, from Apache Avro's
    /// `share/test/data/schema-tests.txt`.
    fn spec_cases() -> Vec<(String, String, Option<i64>)> {
        let text = include_str!("../../../tests/fixtures/avro/schema-tests.txt");
        let mut cases = Vec::new();
        let mut lines = text.lines().peekable();
        let mut input: Option<String> = None;
        while let Some(line) = lines.next() {
            if let Some(rest) = line.strip_prefix("<<INPUT") {
                if rest.trim().is_empty() {
                    let mut block = String::new();
                    for l in lines.by_ref() {
                        if l == "INPUT" {
                            break;
                        }
                        block.push_str(l);
                        block.push('\n');
                    }
                    input = Some(block);
                } else {
                    input = Some(rest.trim().to_string());
                }
            } else if let Some(rest) = line.strip_prefix("<<canonical ") {
                let fp = lines
                    .peek()
                    .and_then(|l| l.strip_prefix("<<fingerprint "))
                    .map(|f| f.trim().parse::<i64>().expect("fixture fingerprint"));
                if let Some(i) = input.take() {
                    cases.push((i, rest.to_string(), fp));
                }
            }
        }
        cases
    }

    #[test]
    fn canonical_forms_and_fingerprints_match_the_avro_spec_vectors() {
        let cases = spec_cases();
        assert_eq!(cases.len(), 34, "every case of the fixture parsed");
        let mut with_fp = 0;
        for (input, canonical, fp) in cases {
            assert_eq!(canonical_form(&input).unwrap(), canonical, "input {input}");
            if let Some(fp) = fp {
                assert_eq!(crc64_avro(canonical.as_bytes()) as i64, fp, "{canonical}");
                with_fp += 1;
            }
        }
        assert!(with_fp >= 20);
    }

    #[test]
    fn logical_types_reduce_to_their_primitive() {
        let s = r#"{"type":"record","name":"T","namespace":"a","fields":[
            {"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}},
            {"name":"d","type":{"type":"bytes","logicalType":"decimal","precision":4,"scale":2}}]}"#;
        assert_eq!(
            canonical_form(s).unwrap(),
            r#"{"name":"a.T","type":"record","fields":[{"name":"t","type":"long"},{"name":"d","type":"bytes"}]}"#
        );
    }

    #[test]
    fn nested_names_inherit_the_record_namespace() {
        let s = r#"{"type":"record","name":"R","namespace":"n","fields":[
            {"name":"e","type":{"type":"enum","name":"E","symbols":["A"]}},
            {"name":"again","type":"E"},
            {"name":"other","type":{"type":"fixed","name":"x.F","size":"02"}}]}"#;
        assert_eq!(
            canonical_form(s).unwrap(),
            r#"{"name":"n.R","type":"record","fields":[{"name":"e","type":{"name":"n.E","type":"enum","symbols":["A"]}},{"name":"again","type":"n.E"},{"name":"other","type":{"name":"x.F","type":"fixed","size":2}}]}"#
        );
    }

    #[test]
    fn deep_schemas_are_refused_not_recursed() {
        let deep = format!("{}\"int\"{}", "[".repeat(10_000), "]".repeat(10_000));
        // serde_json's own recursion limit (128) or ours: an error either way.
        assert!(canonical_form(&deep).is_err());
        let medium = format!("{}\"int\"{}", "[".repeat(100), "]".repeat(100));
        assert!(matches!(
            canonical_form(&medium),
            Err(CanonicalError::TooDeep(_))
        ));
    }
}
