//! A structural check of an Avro datum against its writer schema, run before
//! the generic decoder (`apache_avro::from_avro_datum`).
//!
//! apache-avro 0.21 allocates from the lengths and block counts a datum
//! declares before it reads the bytes behind them: a 20-byte record can
//! declare a 500 MB string, or an array of 10^9 nulls (zero bytes each), and
//! a recursive schema makes the decoder recurse as deep as the datum says.
//! [`check_datum`] walks the schema over the datum first, allocating nothing
//! per value, and refuses a datum unless
//!
//! - every string, bytes and fixed value fits in the bytes that are left;
//! - enum and union indices are in range, booleans are 0 or 1, ints fit 32 bits;
//! - array and map blocks are well-formed (a negative count is followed by a
//!   byte size that matches the block, as the Avro spec says);
//! - all arrays and maps together hold at most [`GuardLimits::max_items`]
//!   items (by default a multiple of the datum length, so zero-byte items
//!   cannot multiply);
//! - records, arrays and maps nest at most [`GuardLimits::max_depth`] deep;
//! - the `Value` tree the decoder would build, estimated from the schema and
//!   the counts and lengths walked (with the decoder's `Vec` and hash-table
//!   growth, boxed unions, cloned field names and enum symbols), stays within
//!   [`GuardLimits::max_decoded_bytes`]: a cheap item (an empty string, a
//!   small int) still costs a whole `Value`, and a block of 2^k items
//!   followed by a block of one doubles the `Vec`;
//! - every byte is consumed.

use std::mem::size_of;

use apache_avro::schema::{EnumSchema, Name, RecordSchema, ResolvedSchema, UnionSchema};
use apache_avro::types::Value;
use apache_avro::Schema;

use super::DecodeError;

/// Default for [`GuardLimits::max_depth`].
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// How much a datum may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardLimits {
    /// Most array items plus map entries in the whole datum. `None`:
    /// [`default_max_items`] of the datum's length.
    pub max_items: Option<usize>,
    /// Deepest nesting of records, arrays and maps (the top-level record is 1).
    pub max_depth: usize,
    /// Most bytes the decoded `Value` tree may take, as estimated. `None`:
    /// [`default_max_decoded_bytes`] of the datum's length.
    pub max_decoded_bytes: Option<usize>,
}

impl Default for GuardLimits {
    fn default() -> Self {
        Self {
            max_items: None,
            max_depth: DEFAULT_MAX_DEPTH,
            max_decoded_bytes: None,
        }
    }
}

impl GuardLimits {
    /// The item limit for a datum of `datum_len` bytes.
    pub fn item_limit(&self, datum_len: usize) -> usize {
        self.max_items
            .unwrap_or_else(|| default_max_items(datum_len))
    }

    /// The decoded-size limit for a datum of `datum_len` bytes.
    pub fn decoded_limit(&self, datum_len: usize) -> usize {
        self.max_decoded_bytes
            .unwrap_or_else(|| default_max_decoded_bytes(datum_len))
    }
}

/// 8 items per datum byte plus 64: every item that takes at least one byte
/// fits, zero-byte items (null, empty records) stay linear in the input.
pub fn default_max_items(datum_len: usize) -> usize {
    datum_len.saturating_mul(8).saturating_add(64)
}

/// 40 bytes of `Value` tree per datum byte plus 32 KiB. Real records stay
/// well below (a drift report's variables take about 20 per byte); what is
/// refused is a long run of items that cost a whole `Value` for one byte or
/// none, like thousands of empty strings, small ints or booleans in a row.
/// It keeps the decoder, and a conversion of its result to JSON (which can
/// take another third for records), within 64 bytes per input byte.
pub fn default_max_decoded_bytes(datum_len: usize) -> usize {
    datum_len.saturating_mul(40).saturating_add(32 * 1024)
}

/// A `Value` (an array slot, a boxed union branch).
const VALUE: u64 = size_of::<Value>() as u64;
/// A record field or map entry: its name and its `Value`.
const ENTRY: u64 = size_of::<(String, Value)>() as u64;

/// Why a datum was refused; `pos` is the byte offset in the datum where the
/// offending value (or length, count, index) starts.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("{what} truncated at byte {pos}")]
    Truncated { pos: usize, what: &'static str },
    #[error("{what} at byte {pos} is a varint longer than 10 bytes")]
    VarintTooLong { pos: usize, what: &'static str },
    #[error("{what} at byte {pos} is negative ({value})")]
    NegativeLength {
        pos: usize,
        what: &'static str,
        value: i64,
    },
    #[error("{what} at byte {pos} declares {len} bytes, only {remaining} left")]
    LengthPastEnd {
        pos: usize,
        what: &'static str,
        len: u64,
        remaining: usize,
    },
    #[error("int at byte {pos} does not fit 32 bits ({value})")]
    IntOutOfRange { pos: usize, value: i64 },
    #[error("boolean at byte {pos} is {byte:#04x}, neither 0 nor 1")]
    InvalidBoolean { pos: usize, byte: u8 },
    #[error("enum index {index} at byte {pos} is out of range ({symbols} symbols)")]
    EnumIndex {
        pos: usize,
        index: i64,
        symbols: usize,
    },
    #[error("union branch {index} at byte {pos} is out of range ({variants} branches)")]
    UnionIndex {
        pos: usize,
        index: i64,
        variants: usize,
    },
    #[error("{what} block count {count} at byte {pos} cannot be negated")]
    BlockCount {
        pos: usize,
        what: &'static str,
        count: i64,
    },
    #[error("{what} block at byte {pos} declares {declared} bytes, its items take {actual}")]
    BlockSizeMismatch {
        pos: usize,
        what: &'static str,
        declared: u64,
        actual: usize,
    },
    #[error("{what} block at byte {pos} brings the datum over {max} array items and map entries")]
    TooManyItems {
        pos: usize,
        what: &'static str,
        max: usize,
    },
    #[error("value at byte {pos} nests deeper than {max} records, arrays and maps")]
    TooDeep { pos: usize, max: usize },
    #[error("decoding would take more than {max} bytes (estimate passed it at byte {pos})")]
    TooLarge { pos: usize, max: usize },
    #[error("{count} trailing bytes after the datum, from byte {pos}")]
    TrailingBytes { pos: usize, count: usize },
    #[error("schema reference {name} (at byte {pos}) names no type of the writer schema")]
    UnresolvedRef { pos: usize, name: String },
    #[error("cannot collect the named types of the writer schema")]
    Names {
        #[source]
        source: Box<apache_avro::Error>,
    },
}

impl GuardError {
    /// Byte offset in the datum, where the error has one.
    pub fn position(&self) -> Option<usize> {
        match self {
            GuardError::Truncated { pos, .. }
            | GuardError::VarintTooLong { pos, .. }
            | GuardError::NegativeLength { pos, .. }
            | GuardError::LengthPastEnd { pos, .. }
            | GuardError::IntOutOfRange { pos, .. }
            | GuardError::InvalidBoolean { pos, .. }
            | GuardError::EnumIndex { pos, .. }
            | GuardError::UnionIndex { pos, .. }
            | GuardError::BlockCount { pos, .. }
            | GuardError::BlockSizeMismatch { pos, .. }
            | GuardError::TooManyItems { pos, .. }
            | GuardError::TooDeep { pos, .. }
            | GuardError::TooLarge { pos, .. }
            | GuardError::TrailingBytes { pos, .. }
            | GuardError::UnresolvedRef { pos, .. } => Some(*pos),
            GuardError::Names { .. } => None,
        }
    }
}

impl From<GuardError> for DecodeError {
    /// `Malformed`, with the error and its causes in the message.
    fn from(e: GuardError) -> Self {
        DecodeError::Malformed(crate::outcome::chain(&e).to_string())
    }
}

/// Checks that `datum` is one complete, well-formed value of `schema` within
/// `limits` (see the module documentation). Allocates nothing per value; the
/// names of the schema are collected once, on the first `Ref` met.
pub fn check_datum(schema: &Schema, datum: &[u8], limits: &GuardLimits) -> Result<(), GuardError> {
    let mut w = Walker {
        root: schema,
        names: None,
        datum,
        pos: 0,
        items: 0,
        max_items: limits.item_limit(datum.len()),
        max_depth: limits.max_depth,
        cost: 0,
        max_cost: limits.decoded_limit(datum.len()),
    };
    w.value(schema, None, 0)?;
    match datum.len() - w.pos {
        0 => Ok(()),
        count => Err(GuardError::TrailingBytes { pos: w.pos, count }),
    }
}

/// The namespace a name resolves in: its own, else the enclosing one
/// (empty counts as none), as `Name::fully_qualified_name` does.
fn qualify<'s>(own: Option<&'s str>, enclosing: Option<&'s str>) -> Option<&'s str> {
    own.or(enclosing.filter(|ns| !ns.is_empty()))
}

/// Array items, or map entries (a string key, then the value).
#[derive(Clone, Copy)]
enum Block {
    Array,
    Map,
}

impl Block {
    fn what(self) -> &'static str {
        match self {
            Block::Array => "array",
            Block::Map => "map",
        }
    }
}

struct Walker<'s, 'd> {
    root: &'s Schema,
    /// Named types of `root`, collected on the first `Ref`.
    names: Option<ResolvedSchema<'s>>,
    datum: &'d [u8],
    pos: usize,
    items: usize,
    max_items: usize,
    max_depth: usize,
    /// Estimated bytes of the decoded tree so far.
    cost: u64,
    max_cost: usize,
}

impl<'s> Walker<'s, '_> {
    fn remaining(&self) -> usize {
        self.datum.len() - self.pos
    }

    /// A zig-zag varint (Avro `int` and `long`).
    fn long(&mut self, what: &'static str) -> Result<i64, GuardError> {
        let start = self.pos;
        let mut z: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.datum.get(self.pos) else {
                return Err(GuardError::Truncated { pos: start, what });
            };
            self.pos += 1;
            z |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        Err(GuardError::VarintTooLong { pos: start, what })
    }

    fn int(&mut self, what: &'static str) -> Result<i32, GuardError> {
        let start = self.pos;
        let v = self.long(what)?;
        i32::try_from(v).map_err(|_| GuardError::IntOutOfRange {
            pos: start,
            value: v,
        })
    }

    fn skip(&mut self, n: usize, what: &'static str) -> Result<(), GuardError> {
        if n > self.remaining() {
            return Err(GuardError::Truncated {
                pos: self.pos,
                what,
            });
        }
        self.pos += n;
        Ok(())
    }

    /// A non-negative length that fits in what is left; returns it.
    fn length(&mut self, what: &'static str) -> Result<usize, GuardError> {
        let start = self.pos;
        let n = self.long(what)?;
        let len = u64::try_from(n).map_err(|_| GuardError::NegativeLength {
            pos: start,
            what,
            value: n,
        })?;
        let remaining = self.remaining();
        match usize::try_from(len) {
            Ok(len) if len <= remaining => Ok(len),
            _ => Err(GuardError::LengthPastEnd {
                pos: start,
                what,
                len,
                remaining,
            }),
        }
    }

    /// A length-prefixed string or bytes value; returns its length.
    fn sized(&mut self, what: &'static str) -> Result<u64, GuardError> {
        let n = self.length(what)?;
        self.pos += n;
        Ok(n as u64)
    }

    /// Adds `bytes` to the estimated size of the decoded tree.
    fn spend(&mut self, bytes: u64) -> Result<(), GuardError> {
        self.cost = self.cost.saturating_add(bytes);
        if self.cost > self.max_cost as u64 {
            return Err(GuardError::TooLarge {
                pos: self.pos,
                max: self.max_cost,
            });
        }
        Ok(())
    }

    fn enter(&self, depth: usize) -> Result<usize, GuardError> {
        if depth >= self.max_depth {
            return Err(GuardError::TooDeep {
                pos: self.pos,
                max: self.max_depth,
            });
        }
        Ok(depth + 1)
    }

    /// The type a `Ref` names, and the namespace it was found in.
    fn resolve(
        &mut self,
        name: &'s Name,
        ns: Option<&'s str>,
    ) -> Result<(&'s Schema, Option<&'s str>), GuardError> {
        let names = match self.names.take() {
            Some(n) => n,
            None => ResolvedSchema::try_from(self.root).map_err(|e| GuardError::Names {
                source: Box::new(e),
            })?,
        };
        let names = self.names.insert(names);
        let ns = qualify(name.namespace.as_deref(), ns);
        let found = names
            .get_names()
            .iter()
            .find(|(n, _)| n.name == name.name && n.namespace.as_deref() == ns)
            .map(|(_, s)| *s);
        match found {
            Some(s) => Ok((s, ns)),
            None => Err(GuardError::UnresolvedRef {
                pos: self.pos,
                name: match ns {
                    Some(ns) => format!("{ns}.{}", name.name),
                    None => name.name.clone(),
                },
            }),
        }
    }

    /// One value of `schema`; `ns` is the enclosing namespace and `depth`
    /// the nesting of the value's container.
    fn value(
        &mut self,
        schema: &'s Schema,
        ns: Option<&'s str>,
        depth: usize,
    ) -> Result<(), GuardError> {
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => self.boolean(),
            Schema::Int | Schema::Date | Schema::TimeMillis => self.int("int").map(drop),
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => self.long("long").map(drop),
            Schema::Float => self.skip(4, "float"),
            Schema::Double => self.skip(8, "double"),
            Schema::Duration => self.skip(12, "duration"),
            Schema::String => self.length_prefixed("string length", 1),
            Schema::Bytes => self.length_prefixed("bytes length", 1),
            // The bytes, then a big integer read from them.
            Schema::BigDecimal => self.length_prefixed("big-decimal length", 2),
            Schema::Uuid => self.length_prefixed("uuid length", 1),
            Schema::Fixed(f) => {
                self.skip(f.size, "fixed")?;
                self.spend(f.size as u64)
            }
            // The bytes or fixed, then a big integer of the same size.
            Schema::Decimal(d) => {
                let start = self.pos;
                self.value(&d.inner, ns, depth)?;
                self.spend((self.pos - start) as u64)
            }
            Schema::Enum(e) => self.enum_symbol(e),
            Schema::Union(u) => self.union_branch(u, ns, depth),
            Schema::Record(r) => self.record(r, ns, depth),
            Schema::Array(a) => {
                let depth = self.enter(depth)?;
                self.blocks(Block::Array, &a.items, ns, depth)
            }
            Schema::Map(m) => {
                let depth = self.enter(depth)?;
                self.blocks(Block::Map, &m.types, ns, depth)
            }
            Schema::Ref { name } => self.reference(name, ns, depth),
        }
    }

    /// A boolean: one byte, 0 or 1.
    fn boolean(&mut self) -> Result<(), GuardError> {
        let pos = self.pos;
        match self.datum.get(pos) {
            None => Err(GuardError::Truncated {
                pos,
                what: "boolean",
            }),
            Some(0 | 1) => {
                self.pos += 1;
                Ok(())
            }
            Some(&byte) => Err(GuardError::InvalidBoolean { pos, byte }),
        }
    }

    /// A length and that many bytes (string, bytes, uuid, big decimal); the
    /// decoded tree holds `copies` times the bytes.
    fn length_prefixed(&mut self, what: &'static str, copies: u64) -> Result<(), GuardError> {
        let n = self.sized(what)?;
        self.spend(n.saturating_mul(copies))
    }

    /// An enum index, in range of the symbols.
    fn enum_symbol(&mut self, e: &'s EnumSchema) -> Result<(), GuardError> {
        let pos = self.pos;
        let index = self.int("enum index")?;
        match usize::try_from(index).ok().and_then(|i| e.symbols.get(i)) {
            // The symbol is cloned.
            Some(symbol) => self.spend(symbol.len() as u64),
            _ => Err(GuardError::EnumIndex {
                pos,
                index: i64::from(index),
                symbols: e.symbols.len(),
            }),
        }
    }

    /// A union branch index, in range, then the branch's value.
    fn union_branch(
        &mut self,
        u: &'s UnionSchema,
        ns: Option<&'s str>,
        depth: usize,
    ) -> Result<(), GuardError> {
        let pos = self.pos;
        let index = self.long("union branch")?;
        let variants = u.variants();
        match usize::try_from(index).ok().and_then(|i| variants.get(i)) {
            Some(branch) => {
                // The branch's value is boxed.
                self.spend(VALUE)?;
                self.value(branch, ns, depth)
            }
            None => Err(GuardError::UnionIndex {
                pos,
                index,
                variants: variants.len(),
            }),
        }
    }

    /// The fields of a record, one nesting level deeper, in its namespace.
    fn record(
        &mut self,
        r: &'s RecordSchema,
        ns: Option<&'s str>,
        depth: usize,
    ) -> Result<(), GuardError> {
        let depth = self.enter(depth)?;
        let ns = qualify(r.name.namespace.as_deref(), ns);
        for field in &r.fields {
            // A (name, value) slot, the name cloned.
            self.spend(ENTRY + field.name.len() as u64)?;
            self.value(&field.schema, ns, depth)?;
        }
        Ok(())
    }

    /// A value of the named type a `Ref` points at.
    fn reference(
        &mut self,
        name: &'s Name,
        ns: Option<&'s str>,
        depth: usize,
    ) -> Result<(), GuardError> {
        let (target, ns) = self.resolve(name, ns)?;
        // Named types are records, enums and fixed; a reference to a
        // reference (hand-built schema) still counts as nesting.
        let depth = match target {
            Schema::Ref { .. } => self.enter(depth)?,
            _ => depth,
        };
        self.value(target, ns, depth)
    }

    /// The blocks of an array or map: `count items...`, or `-count size
    /// items...` where `size` is the byte length of the items, up to a 0 count.
    fn blocks(
        &mut self,
        kind: Block,
        item: &'s Schema,
        ns: Option<&'s str>,
        depth: usize,
    ) -> Result<(), GuardError> {
        let what = kind.what();
        // Items so far, and the slots the decoder's collection has for them.
        let (mut len, mut cap) = (0u64, 0u64);
        loop {
            let start = self.pos;
            let count = self.long(what)?;
            if count == 0 {
                return Ok(());
            }
            let (n, declared) = if count < 0 {
                let n = count.checked_neg().ok_or(GuardError::BlockCount {
                    pos: start,
                    what,
                    count,
                })?;
                let size = self.length("block byte size")?;
                (n.unsigned_abs(), Some(size))
            } else {
                (count.unsigned_abs(), None)
            };
            let total = (self.items as u64).saturating_add(n);
            if total > self.max_items as u64 {
                return Err(GuardError::TooManyItems {
                    pos: start,
                    what,
                    max: self.max_items,
                });
            }
            // `total` is at most `max_items`, a usize.
            self.items = total as usize;
            // The decoder reserves room for the block before reading it.
            let need = len.saturating_add(n);
            if need > cap {
                let (slots, bytes) = match kind {
                    Block::Array => vec_growth(cap, need),
                    Block::Map => table_growth(cap, need),
                };
                self.spend(bytes)?;
                cap = slots;
            }
            len = need;
            let body = self.pos;
            for _ in 0..n {
                if let Block::Map = kind {
                    let key = self.sized("map key length")?;
                    self.spend(key)?;
                }
                self.value(item, ns, depth)?;
            }
            if let Some(declared) = declared {
                let actual = self.pos - body;
                if actual != declared {
                    return Err(GuardError::BlockSizeMismatch {
                        pos: start,
                        what,
                        declared: declared as u64,
                        actual,
                    });
                }
            }
        }
    }
}

/// `Vec<Value>::reserve` from `cap` slots to hold `need`: the new slot
/// count (doubling, at least 4) and the bytes it adds.
fn vec_growth(cap: u64, need: u64) -> (u64, u64) {
    let slots = need.max(cap.saturating_mul(2)).max(4);
    (slots, (slots - cap).saturating_mul(VALUE))
}

/// `HashMap<String, Value>::reserve` (hashbrown) from a table that holds
/// `cap` entries to one that holds `need`: the new capacity and the bytes of
/// the new table (the old one lives until the entries are moved, so it is
/// not taken off).
fn table_growth(cap: u64, need: u64) -> (u64, u64) {
    let want = need.max(cap.saturating_add(1));
    let buckets = match want {
        0..4 => 4,
        4..8 => 8,
        _ => (want.saturating_mul(8) / 7).next_power_of_two(),
    };
    let capacity = if buckets <= 8 {
        buckets - 1
    } else {
        buckets / 8 * 7
    };
    // One control byte per bucket, plus a group of 16.
    (
        capacity,
        buckets.saturating_mul(ENTRY + 1).saturating_add(16),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{HISTORY_SCHEMAS, LABEL_SCHEMA, SCORED_SCHEMA, TRANSACTION_SCHEMA};
    use apache_avro::types::Value;

    /// The drift report's first version: deeply nested (an array of
    /// records holding arrays and unions), which is what these tests need.
    /// The current version's records are checked end to end
    /// (`tests/stream_parity.rs` decodes the worker's reports).
    const DRIFT_SCHEMA: &str = include_str!("../../../schemas/history/drift_report.v1.avsc");

    fn parse(text: &str) -> Schema {
        Schema::parse_str(text).expect("test schema parses")
    }

    fn check(schema: &Schema, datum: &[u8]) -> Result<(), GuardError> {
        check_datum(schema, datum, &GuardLimits::default())
    }

    /// Avro `long` encoding.
    fn long(v: i64) -> Vec<u8> {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
        out
    }

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    fn record(fields: Vec<(&str, Value)>) -> Value {
        Value::Record(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    fn transaction() -> Value {
        record(vec![
            ("transaction_id", s("42")),
            ("event_time", Value::TimestampMillis(1_522_540_831_000)),
            ("customer_id", s("596")),
            ("terminal_id", s("3156")),
            ("amount", Value::Double(57.16)),
            ("currency", s("EUR")),
        ])
    }

    fn variable(name: &str, ks: Option<f64>, over: &[&str]) -> Value {
        let opt = |x: Option<f64>| match x {
            Some(x) => Value::Union(1, Box::new(Value::Double(x))),
            None => Value::Union(0, Box::new(Value::Null)),
        };
        record(vec![
            ("name", s(name)),
            ("kind", s("continuous")),
            ("mean", Value::Double(1.0)),
            ("std", Value::Double(0.5)),
            ("reference_mean", Value::Double(0.9)),
            ("psi", Value::Double(0.01)),
            ("ks_statistic", opt(ks)),
            ("ks_pvalue", opt(ks.map(|k| 1.0 - k))),
            ("wasserstein", opt(None)),
            ("chi2", opt(Some(3.5))),
            ("chi2_pvalue", opt(None)),
            ("judged", Value::Boolean(true)),
            ("over", Value::Array(over.iter().map(|o| s(o)).collect())),
            ("alerting", Value::Boolean(!over.is_empty())),
        ])
    }

    fn drift(vars: Vec<Value>) -> Value {
        let strings = |v: &[&str]| Value::Array(v.iter().map(|x| s(x)).collect());
        record(vec![
            ("model_name", s("mlp")),
            ("model_version", s("3")),
            ("instance", s("worker-1")),
            ("window_index", Value::Long(7)),
            ("window_start", Value::TimestampMillis(1_000)),
            ("window_end", Value::TimestampMillis(2_000)),
            ("records", Value::Long(5_000)),
            ("judged", Value::Boolean(true)),
            ("samples_dropped", Value::Long(0)),
            ("flagged_rate", Value::Double(0.02)),
            ("reference_flagged_rate", Value::Double(0.018)),
            ("variables", Value::Array(vars)),
            ("raised", strings(&["amount"])),
            ("cleared", strings(&[])),
            ("active", strings(&["amount", "SCORE"])),
            ("emitted_at", Value::TimestampMillis(3_000)),
        ])
    }

    fn encode(schema: &Schema, v: Value) -> Vec<u8> {
        apache_avro::to_avro_datum(schema, v).expect("test value encodes")
    }

    #[test]
    fn valid_datums_of_every_shipped_schema_pass() {
        let tx = parse(TRANSACTION_SCHEMA);
        check(&tx, &encode(&tx, transaction())).expect("transaction");

        let v1 = parse(HISTORY_SCHEMAS[0]);
        let Value::Record(mut fields) = transaction() else {
            panic!("a record")
        };
        fields.retain(|(k, _)| k != "currency");
        check(&v1, &encode(&v1, Value::Record(fields))).expect("transaction v1");

        let scored = parse(SCORED_SCHEMA);
        let sv = record(vec![
            ("transaction_id", s("1")),
            ("event_time", Value::TimestampMillis(-5)),
            ("customer_id", s("kündin-€")),
            ("terminal_id", s(&"x".repeat(300))),
            ("amount", Value::Double(4.5)),
            ("currency", s("EUR")),
            ("score", Value::Float(0.25)),
            ("is_fraud", Value::Boolean(false)),
            ("threshold", Value::Float(0.5)),
            ("model_name", s("m")),
            ("model_version", s("1")),
            ("scored_at", Value::TimestampMillis(i64::MAX)),
        ]);
        check(&scored, &encode(&scored, sv)).expect("scored");

        let label = parse(LABEL_SCHEMA);
        let lv = record(vec![
            ("transaction_id", s("1")),
            ("customer_id", s("2")),
            ("terminal_id", s("3")),
            ("event_time", Value::TimestampMillis(10)),
            ("is_fraud", Value::Boolean(true)),
            ("reported_at", Value::TimestampMillis(i64::MIN)),
        ]);
        check(&label, &encode(&label, lv)).expect("label");

        let d = parse(DRIFT_SCHEMA);
        check(&d, &encode(&d, drift(vec![]))).expect("drift, no variables");
        let vars = (0..40)
            .map(|i| {
                variable(
                    &format!("v{i}"),
                    (i % 2 == 0).then_some(0.1),
                    &["psi", "ks"],
                )
            })
            .collect();
        check(&d, &encode(&d, drift(vars))).expect("drift, 40 variables");
    }

    #[test]
    fn valid_datums_of_every_schema_variant_pass() {
        let schema = parse(
            r#"{"type":"record","name":"All","namespace":"t","fields":[
              {"name":"n","type":"null"},
              {"name":"b","type":"boolean"},
              {"name":"i","type":"int"},
              {"name":"l","type":"long"},
              {"name":"f","type":"float"},
              {"name":"d","type":"double"},
              {"name":"by","type":"bytes"},
              {"name":"s","type":"string"},
              {"name":"a","type":{"type":"array","items":"int"}},
              {"name":"m","type":{"type":"map","values":"string"}},
              {"name":"u","type":["null","string","long"]},
              {"name":"e","type":{"type":"enum","name":"Colour","symbols":["RED","GREEN"]}},
              {"name":"fx","type":{"type":"fixed","name":"Four","size":4}},
              {"name":"dec_b","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
              {"name":"dec_f","type":{"type":"fixed","name":"Dec","size":8,"logicalType":"decimal","precision":9,"scale":2}},
              {"name":"bd","type":{"type":"bytes","logicalType":"big-decimal"}},
              {"name":"uuid","type":{"type":"string","logicalType":"uuid"}},
              {"name":"date","type":{"type":"int","logicalType":"date"}},
              {"name":"tms","type":{"type":"int","logicalType":"time-millis"}},
              {"name":"tus","type":{"type":"long","logicalType":"time-micros"}},
              {"name":"tsm","type":{"type":"long","logicalType":"timestamp-millis"}},
              {"name":"tsu","type":{"type":"long","logicalType":"timestamp-micros"}},
              {"name":"tsn","type":{"type":"long","logicalType":"timestamp-nanos"}},
              {"name":"ltm","type":{"type":"long","logicalType":"local-timestamp-millis"}},
              {"name":"ltu","type":{"type":"long","logicalType":"local-timestamp-micros"}},
              {"name":"ltn","type":{"type":"long","logicalType":"local-timestamp-nanos"}},
              {"name":"dur","type":{"type":"fixed","name":"Dur","size":12,"logicalType":"duration"}},
              {"name":"e2","type":"Colour"},
              {"name":"fx2","type":"t.Four"}
            ]}"#,
        );
        let mut map = std::collections::HashMap::new();
        map.insert("k".to_string(), s("v"));
        map.insert("".to_string(), s(""));
        let v = record(vec![
            ("n", Value::Null),
            ("b", Value::Boolean(true)),
            ("i", Value::Int(i32::MIN)),
            ("l", Value::Long(i64::MIN)),
            ("f", Value::Float(1.5)),
            ("d", Value::Double(-2.5)),
            ("by", Value::Bytes(vec![0, 1, 2])),
            ("s", s("ü")),
            ("a", Value::Array(vec![Value::Int(1), Value::Int(-1)])),
            ("m", Value::Map(map)),
            ("u", Value::Union(2, Box::new(Value::Long(9)))),
            ("e", Value::Enum(1, "GREEN".into())),
            ("fx", Value::Fixed(4, vec![1, 2, 3, 4])),
            (
                "dec_b",
                Value::Decimal(apache_avro::Decimal::from(vec![0x01, 0x02])),
            ),
            (
                "dec_f",
                Value::Decimal(apache_avro::Decimal::from(vec![
                    0, 0, 0, 0, 0, 0, 0x01, 0x02,
                ])),
            ),
            (
                "bd",
                Value::BigDecimal("12345.678".parse().expect("a decimal number")),
            ),
            (
                "uuid",
                Value::Uuid(
                    apache_avro::Uuid::parse_str("550e8400-e29b-41d4-a716-446655440000")
                        .expect("a uuid"),
                ),
            ),
            ("date", Value::Date(19_000)),
            ("tms", Value::TimeMillis(1_000)),
            ("tus", Value::TimeMicros(1_000_000)),
            ("tsm", Value::TimestampMillis(1)),
            ("tsu", Value::TimestampMicros(2)),
            ("tsn", Value::TimestampNanos(3)),
            ("ltm", Value::LocalTimestampMillis(4)),
            ("ltu", Value::LocalTimestampMicros(5)),
            ("ltn", Value::LocalTimestampNanos(6)),
            (
                "dur",
                Value::Duration(apache_avro::Duration::new(
                    apache_avro::Months::new(1),
                    apache_avro::Days::new(2),
                    apache_avro::Millis::new(3),
                )),
            ),
            ("e2", Value::Enum(0, "RED".into())),
            ("fx2", Value::Fixed(4, vec![9, 9, 9, 9])),
        ]);
        let datum = encode(&schema, v);
        check(&schema, &datum).expect("every variant");
        // The decoder agrees that the datum is whole.
        let mut cur = std::io::Cursor::new(&datum[..]);
        apache_avro::from_avro_datum(&schema, &mut cur, None).expect("decodes");
        assert_eq!(cur.position() as usize, datum.len());
        // Every truncation is refused.
        for n in 0..datum.len() {
            assert!(check(&schema, &datum[..n]).is_err(), "{n} bytes");
        }
    }

    #[test]
    fn a_string_longer_than_the_input_is_refused() {
        let schema = parse(r#""string""#);
        // Declares 500 MB, holds 3 bytes.
        let datum = [long(500_000_000), b"abc".to_vec()].concat();
        let err = check(&schema, &datum).unwrap_err();
        assert!(
            matches!(
                err,
                GuardError::LengthPastEnd {
                    pos: 0,
                    len: 500_000_000,
                    remaining: 3,
                    ..
                }
            ),
            "{err}"
        );
        let err = check(&schema, &long(-1)).unwrap_err();
        assert!(
            matches!(err, GuardError::NegativeLength { value: -1, .. }),
            "{err}"
        );
        // The same inside a record: the position is the length's.
        let tx = parse(TRANSACTION_SCHEMA);
        let good = encode(&tx, transaction());
        // customer_id ("596") starts after "42" (3 bytes) and event_time (6).
        assert_eq!(&good[9..13], b"\x06596");
        let datum = [&good[..9], &long(1 << 40)[..], &good[10..]].concat();
        let err = check(&tx, &datum).unwrap_err();
        assert!(
            matches!(err, GuardError::LengthPastEnd { pos: 9, len, .. } if len == 1 << 40),
            "{err}"
        );
        let fixed = parse(r#"{"type":"fixed","name":"F","size":16}"#);
        let err = check(&fixed, &[0; 15]).unwrap_err();
        assert!(matches!(err, GuardError::Truncated { pos: 0, .. }), "{err}");
    }

    #[test]
    fn an_array_of_a_billion_nulls_is_refused() {
        let schema = parse(r#"{"type":"array","items":"null"}"#);
        let datum = [long(1_000_000_000), long(0)].concat();
        let err = check(&schema, &datum).unwrap_err();
        assert!(
            matches!(err, GuardError::TooManyItems { pos: 0, max, .. } if max == default_max_items(datum.len())),
            "{err}"
        );
        // Many small blocks add up as well (the decoded-size estimate,
        // left out here, would refuse them too).
        let mut datum = Vec::new();
        for _ in 0..100 {
            datum.extend(long(100));
        }
        datum.extend(long(0));
        let items_only = GuardLimits {
            max_decoded_bytes: Some(usize::MAX),
            ..GuardLimits::default()
        };
        let err = check_datum(&schema, &datum, &items_only).unwrap_err();
        assert!(matches!(err, GuardError::TooManyItems { .. }), "{err}");
        let err = check(&schema, &datum).unwrap_err();
        assert!(matches!(err, GuardError::TooLarge { .. }), "{err}");
        // Within the default limit: accepted.
        let ok = [long(64), long(0)].concat();
        check(&schema, &ok).expect("64 nulls");
        // An explicit limit.
        let limits = GuardLimits {
            max_items: Some(10),
            ..GuardLimits::default()
        };
        let err = check_datum(&schema, &ok, &limits).unwrap_err();
        assert!(
            matches!(err, GuardError::TooManyItems { max: 10, .. }),
            "{err}"
        );
        // Maps count their entries.
        let map = parse(r#"{"type":"map","values":"null"}"#);
        let datum = [long(1_000_000_000), long(0)].concat();
        let err = check(&map, &datum).unwrap_err();
        assert!(
            matches!(err, GuardError::TooManyItems { what: "map", .. }),
            "{err}"
        );
    }

    #[test]
    fn negative_block_counts_need_a_matching_byte_size() {
        let schema = parse(r#"{"type":"array","items":"string"}"#);
        let items = [long(2), b"ab".to_vec(), long(1), b"c".to_vec()].concat();
        // -2 items, 5 bytes: well-formed, and the decoder reads it.
        let ok = [long(-2), long(items.len() as i64), items.clone(), long(0)].concat();
        check(&schema, &ok).expect("negative count with its size");
        apache_avro::from_avro_datum(&schema, &mut &ok[..], None).expect("decodes");
        // A size that does not match the items.
        let bad = [long(-2), long(4), items.clone(), long(0)].concat();
        let err = check(&schema, &bad).unwrap_err();
        assert!(
            matches!(
                err,
                GuardError::BlockSizeMismatch {
                    pos: 0,
                    declared: 4,
                    actual: 5,
                    ..
                }
            ),
            "{err}"
        );
        // A size past the end, a negative size, no size at all.
        let err = check(
            &schema,
            &[long(-2), long(1_000_000), items.clone()].concat(),
        )
        .unwrap_err();
        assert!(
            matches!(err, GuardError::LengthPastEnd { pos: 1, .. }),
            "{err}"
        );
        let err = check(&schema, &[long(-2), long(-5), items.clone()].concat()).unwrap_err();
        assert!(
            matches!(
                err,
                GuardError::NegativeLength {
                    pos: 1,
                    value: -5,
                    ..
                }
            ),
            "{err}"
        );
        let err = check(&schema, &long(-2)).unwrap_err();
        assert!(matches!(err, GuardError::Truncated { pos: 1, .. }), "{err}");
        // A count that cannot be negated.
        let err = check(&schema, &[long(i64::MIN), long(0)].concat()).unwrap_err();
        assert!(
            matches!(
                err,
                GuardError::BlockCount {
                    pos: 0,
                    count: i64::MIN,
                    ..
                }
            ),
            "{err}"
        );
        // A negative count of a billion nulls is refused before its size is trusted.
        let nulls = parse(r#"{"type":"array","items":"null"}"#);
        let err = check(&nulls, &[long(-1_000_000_000), long(0), long(0)].concat()).unwrap_err();
        assert!(
            matches!(err, GuardError::TooManyItems { pos: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_bad_union_index_is_refused() {
        let schema = parse(r#"["null","double"]"#);
        check(&schema, &[long(1), 1.5f64.to_le_bytes().to_vec()].concat()).expect("double");
        check(&schema, &long(0)).expect("null");
        for index in [2, -1, i64::MAX, i64::MIN] {
            let err = check(&schema, &long(index)).unwrap_err();
            assert!(
                matches!(err, GuardError::UnionIndex { pos: 0, index: i, variants: 2 } if i == index),
                "{err}"
            );
        }
        // An empty union index (the decoder would read `null`).
        let err = check(&schema, &[]).unwrap_err();
        assert!(matches!(err, GuardError::Truncated { pos: 0, .. }), "{err}");
        // And one inside the drift report.
        let d = parse(DRIFT_SCHEMA);
        let good = encode(&d, drift(vec![variable("amount", Some(0.5), &[])]));
        check(&d, &good).expect("drift");
        // Turn the first union index (ks_statistic, branch 1: byte 2) into 3.
        let mut found = false;
        for pos in 0..good.len() {
            if good[pos] != 2 {
                continue;
            }
            let mut bad = good.clone();
            bad[pos] = 6; // branch 3 of 2
            if matches!(check(&d, &bad), Err(GuardError::UnionIndex { pos: p, index: 3, .. }) if p == pos)
            {
                found = true;
                break;
            }
        }
        assert!(found, "no union index found to corrupt");
        let e = parse(r#"{"type":"enum","name":"E","symbols":["A","B"]}"#);
        let err = check(&e, &long(2)).unwrap_err();
        assert!(
            matches!(
                err,
                GuardError::EnumIndex {
                    index: 2,
                    symbols: 2,
                    ..
                }
            ),
            "{err}"
        );
        let err = check(&e, &long(-1)).unwrap_err();
        assert!(
            matches!(err, GuardError::EnumIndex { index: -1, .. }),
            "{err}"
        );
    }

    const LIST: &str = r#"{"type":"record","name":"Node","namespace":"t","fields":[
        {"name":"value","type":"int"},
        {"name":"next","type":["null","Node"]}]}"#;

    /// A linked list of `n` nodes.
    fn list(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            out.extend(long(i as i64));
            out.extend(long(if i + 1 < n { 1 } else { 0 }));
        }
        out
    }

    #[test]
    fn a_too_deep_recursive_datum_is_refused() {
        let schema = parse(LIST);
        check(&schema, &list(1)).expect("one node");
        check(&schema, &list(DEFAULT_MAX_DEPTH)).expect("64 nodes");
        apache_avro::from_avro_datum(&schema, &mut &list(64)[..], None).expect("decodes");
        let err = check(&schema, &list(DEFAULT_MAX_DEPTH + 1)).unwrap_err();
        assert!(
            matches!(err, GuardError::TooDeep { pos, max: 64 } if pos == 2 * DEFAULT_MAX_DEPTH),
            "{err}"
        );
        // A million nodes: refused, no stack overflow.
        let err = check(&schema, &list(1_000_000)).unwrap_err();
        assert!(matches!(err, GuardError::TooDeep { .. }), "{err}");
        // A record that contains itself without a union consumes no bytes
        // per level: the depth limit ends it too.
        let endless = parse(
            r#"{"type":"record","name":"R","fields":[{"name":"r","type":{"type":"array","items":"R"}}]}"#,
        );
        let mut datum = Vec::new();
        for _ in 0..100 {
            datum.extend(long(1));
        }
        let err = check(&endless, &datum).unwrap_err();
        assert!(matches!(err, GuardError::TooDeep { .. }), "{err}");
        let limits = GuardLimits {
            max_depth: 3,
            ..GuardLimits::default()
        };
        check_datum(&schema, &list(3), &limits).expect("3 nodes at depth 3");
        assert!(check_datum(&schema, &list(4), &limits).is_err());
    }

    #[test]
    fn a_datum_that_decodes_to_a_huge_tree_is_refused() {
        let strings = parse(r#"{"type":"array","items":"string"}"#);
        // 32769 one-letter strings pass in one block; as 32768 and then one
        // more, the decoder's Vec doubles to 65536 slots (3.7 MB).
        let a = |n: usize| [2u8, b'a'].repeat(n);
        let one = [long(32_769), a(32_769), long(0)].concat();
        check(&strings, &one).expect("one block");
        let doubled = [long(32_768), a(32_768), long(1), a(1), long(0)].concat();
        let err = check(&strings, &doubled).unwrap_err();
        assert!(
            matches!(err, GuardError::TooLarge { pos: 65_540, .. }),
            "{err}"
        );
        // Ten thousand empty strings: a whole `Value` per byte.
        let empty = [long(10_000), vec![0; 10_000], long(0)].concat();
        let err = check(&strings, &empty).unwrap_err();
        assert!(matches!(err, GuardError::TooLarge { pos: 3, .. }), "{err}");
        // The same count of two-letter strings is fine.
        let mut words = long(10_000);
        for _ in 0..10_000 {
            words.extend([4, b'a', b'b']);
        }
        words.extend(long(0));
        check(&strings, &words).expect("10k words");
        // A map of ten thousand null values under the empty key: one entry,
        // but a table reserved for ten thousand.
        let map = parse(r#"{"type":"map","values":"null"}"#);
        let datum = [long(10_000), vec![0; 10_000], long(0)].concat();
        let err = check(&map, &datum).unwrap_err();
        assert!(matches!(err, GuardError::TooLarge { .. }), "{err}");
        // An enum index is one byte; its symbol is cloned.
        let symbol = "S".repeat(1_000);
        let e = parse(&format!(
            r#"{{"type":"array","items":{{"type":"enum","name":"E","symbols":["{symbol}"]}}}}"#
        ));
        let datum = [long(1_000), vec![0; 1_000], long(0)].concat();
        let err = check(&e, &datum).unwrap_err();
        assert!(matches!(err, GuardError::TooLarge { .. }), "{err}");
        check(&e, &[long(10), vec![0; 10], long(0)].concat()).expect("10 long symbols");
        // An explicit limit.
        let tx = parse(TRANSACTION_SCHEMA);
        let datum = encode(&tx, transaction());
        let limits = GuardLimits {
            max_decoded_bytes: Some(100),
            ..GuardLimits::default()
        };
        let err = check_datum(&tx, &datum, &limits).unwrap_err();
        assert!(
            matches!(err, GuardError::TooLarge { max: 100, .. }),
            "{err}"
        );
        // A drift report of 200 realistic variables passes the default.
        let d = parse(DRIFT_SCHEMA);
        let vars = (0..200)
            .map(|i| variable(&format!("feature_{i}"), Some(0.1), &["psi"]))
            .collect();
        check(&d, &encode(&d, drift(vars))).expect("200 variables");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let tx = parse(TRANSACTION_SCHEMA);
        let mut datum = encode(&tx, transaction());
        let len = datum.len();
        datum.extend([0, 0]);
        let err = check(&tx, &datum).unwrap_err();
        assert!(
            matches!(err, GuardError::TrailingBytes { pos, count: 2 } if pos == len),
            "{err}"
        );
        assert_eq!(err.position(), Some(len));
        let msg = DecodeError::from(err);
        assert_eq!(msg.reason(), "malformed_avro");
        assert!(msg.to_string().contains("2 trailing bytes"), "{msg}");
    }

    #[test]
    fn bad_scalars_are_refused() {
        let b = parse(r#""boolean""#);
        let err = check(&b, &[2]).unwrap_err();
        assert!(
            matches!(err, GuardError::InvalidBoolean { pos: 0, byte: 2 }),
            "{err}"
        );
        let i = parse(r#""int""#);
        let err = check(&i, &long(1 << 31)).unwrap_err();
        assert!(
            matches!(err, GuardError::IntOutOfRange { pos: 0, .. }),
            "{err}"
        );
        let l = parse(r#""long""#);
        let err = check(&l, &[0xff; 11]).unwrap_err();
        assert!(
            matches!(err, GuardError::VarintTooLong { pos: 0, .. }),
            "{err}"
        );
        let err = check(&l, &[0xff; 3]).unwrap_err();
        assert!(matches!(err, GuardError::Truncated { pos: 0, .. }), "{err}");
        let d = parse(r#""double""#);
        assert!(matches!(
            check(&d, &[0; 7]),
            Err(GuardError::Truncated { .. })
        ));
    }

    #[test]
    fn references_resolve_through_the_schema_names() {
        // A reference by short name inside the namespace, and by full name.
        let schema = parse(
            r#"{"type":"record","name":"Outer","namespace":"a.b","fields":[
              {"name":"inner","type":{"type":"record","name":"Inner","fields":[{"name":"x","type":"string"}]}},
              {"name":"again","type":"Inner"},
              {"name":"full","type":"a.b.Inner"},
              {"name":"many","type":{"type":"array","items":"Inner"}}]}"#,
        );
        let datum = [
            long(1),
            b"x".to_vec(),
            long(0),
            long(2),
            b"yz".to_vec(),
            long(1),
            long(0),
            long(0),
        ]
        .concat();
        check(&schema, &datum).expect("references");
        apache_avro::from_avro_datum(&schema, &mut &datum[..], None).expect("decodes");
        // A hand-built reference to nothing.
        let dangling = Schema::Ref {
            name: Name::new("nowhere.Missing").expect("a name"),
        };
        let err = check(&dangling, &[]).unwrap_err();
        assert!(
            matches!(
                err,
                GuardError::Names { .. } | GuardError::UnresolvedRef { .. }
            ),
            "{err}"
        );
    }
}
