//! The changelog record: Avro binary of `schemas/customer_state.avsc`
//! (single-object encoding), written and read by hand.
//!
//! Measured hot path: a flush writes every changed customer's whole
//! history (about a hundred entries each on the handbook data), so the
//! encoder writes the bytes directly instead of building an
//! `apache_avro::Value` tree per entry; `tests` check both directions
//! against apache-avro's generic reader and writer.

use crate::codec::{put_long, put_str, HEADER_LEN, SINGLE_OBJECT_MAGIC};
use crate::features::CustomerTx;

/// Why a changelog record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not a riskstream.CustomerState record (header or fingerprint differs)")]
    Schema,
    #[error("truncated or malformed at byte {0}")]
    Malformed(usize),
    #[error("holds {0} transactions, more than a customer's history can")]
    TooLong(u64),
}

/// A decoded changelog record.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerState {
    pub customer_id: String,
    pub covers_offset: i64,
    pub transactions: Vec<CustomerTx>,
}

/// Appends one record (header included) to `out`.
pub fn encode<'a>(
    header: &[u8; HEADER_LEN],
    customer_id: &str,
    covers_offset: i64,
    txs: impl ExactSizeIterator<Item = &'a CustomerTx>,
    out: &mut Vec<u8>,
) {
    out.reserve(HEADER_LEN + customer_id.len() + 12 + txs.len() * 24);
    out.extend_from_slice(header);
    put_str(out, customer_id);
    put_long(out, covers_offset);
    let n = txs.len();
    if n > 0 {
        put_long(out, n as i64);
        for t in txs {
            put_long(out, t.time);
            out.extend_from_slice(&t.amount.to_le_bytes());
            out.extend_from_slice(&t.id.to_le_bytes());
            out.push(u8::from(t.high));
        }
    }
    out.push(0);
}

/// A bounds-checked reader over a datum.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn long(&mut self) -> Result<i64, RecordError> {
        let mut z: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or(RecordError::Malformed(self.pos))?;
            self.pos += 1;
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(RecordError::Malformed(self.pos))
    }

    fn take(&mut self, n: usize) -> Result<&[u8], RecordError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(RecordError::Malformed(self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn eight(&mut self) -> Result<[u8; 8], RecordError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(b)
    }
}

/// Decodes a record written with the schema of this fingerprint.
pub fn decode(fingerprint: u64, bytes: &[u8]) -> Result<CustomerState, RecordError> {
    if bytes.len() < HEADER_LEN
        || bytes[..2] != SINGLE_OBJECT_MAGIC
        || bytes[2..HEADER_LEN] != fingerprint.to_le_bytes()
    {
        return Err(RecordError::Schema);
    }
    let mut r = Reader {
        buf: bytes,
        pos: HEADER_LEN,
    };
    let len = usize::try_from(r.long()?).map_err(|_| RecordError::Malformed(r.pos))?;
    let at = r.pos;
    let customer_id = std::str::from_utf8(r.take(len)?)
        .map_err(|_| RecordError::Malformed(at))?
        .to_string();
    let covers_offset = r.long()?;
    let mut transactions = Vec::new();
    loop {
        let mut n = r.long()?;
        if n == 0 {
            break;
        }
        if n < 0 {
            // A block with its byte size (allowed by the spec).
            n = n.checked_neg().ok_or(RecordError::Malformed(r.pos))?;
            r.long()?;
        }
        let n = n as u64;
        if transactions.len() as u64 + n > 4 * crate::features::MAX_CUSTOMER_HISTORY as u64 {
            return Err(RecordError::TooLong(transactions.len() as u64 + n));
        }
        for _ in 0..n {
            let time = r.long()?;
            let amount = f64::from_le_bytes(r.eight()?);
            let id = u64::from_le_bytes(r.eight()?);
            let high = match r.take(1)?[0] {
                0 => false,
                1 => true,
                _ => return Err(RecordError::Malformed(r.pos)),
            };
            transactions.push(CustomerTx {
                time,
                amount,
                id,
                high,
            });
        }
    }
    if r.pos != bytes.len() {
        return Err(RecordError::Malformed(r.pos));
    }
    Ok(CustomerState {
        customer_id,
        covers_offset,
        transactions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    fn sample() -> Vec<CustomerTx> {
        vec![
            CustomerTx {
                time: 1_533_081_600_000,
                amount: 57.16,
                id: 0xdead_beef_0123_4567,
                high: false,
            },
            CustomerTx {
                time: 1_533_081_700_123,
                amount: -0.0,
                id: u64::MAX,
                high: true,
            },
        ]
    }

    #[test]
    fn apache_avro_reads_what_we_write_and_we_read_what_it_writes() {
        let codec = crate::codec::Codec::new().unwrap();
        let known = codec.customer_state_schema();
        let txs = sample();
        let mut ours = Vec::new();
        encode(&known.header(), "C42", 1234, txs.iter(), &mut ours);
        let generic =
            apache_avro::from_avro_datum(&known.schema, &mut &ours[HEADER_LEN..], None).unwrap();
        let Value::Record(fields) = &generic else {
            panic!("{generic:?}")
        };
        assert_eq!(fields[0].1, Value::String("C42".into()));
        assert_eq!(fields[1].1, Value::Long(1234));
        let Value::Array(items) = &fields[2].1 else {
            panic!()
        };
        assert_eq!(items.len(), 2);
        let Value::Record(t1) = &items[1] else {
            panic!()
        };
        assert_eq!(t1[0].1, Value::TimestampMillis(1_533_081_700_123));
        assert_eq!(t1[2].1, Value::Fixed(8, u64::MAX.to_le_bytes().to_vec()));
        assert_eq!(t1[3].1, Value::Boolean(true));
        // And apache-avro's bytes decode to the same state.
        let theirs = apache_avro::to_avro_datum(&known.schema, generic).unwrap();
        let mut framed = known.header().to_vec();
        framed.extend_from_slice(&theirs);
        let back = decode(known.fingerprint, &framed).unwrap();
        assert_eq!(back.customer_id, "C42");
        assert_eq!(back.covers_offset, 1234);
        assert_eq!(back.transactions, txs);
        assert_eq!(framed, ours, "byte-identical");
    }

    #[test]
    fn hostile_records_are_refused_not_trusted() {
        let codec = crate::codec::Codec::new().unwrap();
        let known = codec.customer_state_schema();
        let mut ok = Vec::new();
        encode(&known.header(), "c", 1, sample().iter(), &mut ok);
        for cut in 0..ok.len() {
            assert!(
                decode(known.fingerprint, &ok[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        assert_eq!(decode(known.fingerprint ^ 1, &ok), Err(RecordError::Schema));
        let mut huge = known.header().to_vec();
        huge.extend_from_slice(&[2, b'c', 2]);
        put_long(&mut huge, i64::MAX / 2);
        assert!(matches!(
            decode(known.fingerprint, &huge),
            Err(RecordError::TooLong(_))
        ));
        let mut trailing = ok.clone();
        trailing.push(0);
        assert!(decode(known.fingerprint, &trailing).is_err());
    }
}
