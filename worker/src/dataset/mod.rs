//! Dataset: reading the handbook's transaction CSV (plain or gzip) into
//! typed rows, and turning rows into wire records (transactions and labels).
//!
//! Event time in epoch ms is `1522540800000 + 1000 * TX_TIME_SECONDS`
//! (2018-04-01 00:00:00 UTC plus the offset); see the data README.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use serde::Deserialize;

use crate::codec::{FraudLabel, Transaction};
use crate::features::{LabelRef, TxRef, DAY_MS, DELAY_DAYS};

/// 2018-04-01 00:00:00 UTC in epoch ms: time zero of the data set.
pub const EPOCH_2018_04_01_MS: i64 = 1_522_540_800_000;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {detail}")]
    Row {
        path: String,
        line: u64,
        detail: String,
    },
    #[error("bad date {0:?}: expected YYYY-MM-DD")]
    Date(String),
}

/// One row of `transactions.csv(.gz)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct HandbookRow {
    #[serde(rename = "TRANSACTION_ID")]
    pub transaction_id: u64,
    #[serde(rename = "CUSTOMER_ID")]
    pub customer_id: u64,
    #[serde(rename = "TERMINAL_ID")]
    pub terminal_id: u64,
    #[serde(rename = "TX_AMOUNT")]
    pub amount: f64,
    #[serde(rename = "TX_TIME_SECONDS")]
    pub time_seconds: i64,
    #[serde(rename = "TX_TIME_DAYS")]
    pub time_days: i64,
    #[serde(rename = "TX_FRAUD", default)]
    pub fraud: u8,
    #[serde(rename = "TX_FRAUD_SCENARIO", default)]
    pub scenario: u8,
}

impl HandbookRow {
    pub fn event_time(&self) -> i64 {
        EPOCH_2018_04_01_MS + 1000 * self.time_seconds
    }

    /// The transaction as it goes on the wire.
    pub fn transaction(&self) -> Transaction {
        Transaction {
            transaction_id: self.transaction_id.to_string(),
            event_time: self.event_time(),
            customer_id: self.customer_id.to_string(),
            terminal_id: self.terminal_id.to_string(),
            amount: self.amount,
            currency: "EUR".into(),
        }
    }

    /// Its label, reported one label delay after the transaction.
    pub fn label(&self) -> FraudLabel {
        let t = self.event_time();
        FraudLabel {
            transaction_id: self.transaction_id.to_string(),
            customer_id: self.customer_id.to_string(),
            terminal_id: self.terminal_id.to_string(),
            event_time: t,
            is_fraud: self.fraud == 1,
            reported_at: t + DELAY_DAYS * DAY_MS,
        }
    }
}

/// Owned string ids so the feature engine can borrow them.
#[derive(Debug, Clone)]
pub struct RowIds {
    pub tx: String,
    pub customer: String,
    pub terminal: String,
}

impl RowIds {
    pub fn of(r: &HandbookRow) -> Self {
        Self {
            tx: r.transaction_id.to_string(),
            customer: r.customer_id.to_string(),
            terminal: r.terminal_id.to_string(),
        }
    }
    pub fn tx_ref<'a>(&'a self, r: &HandbookRow) -> TxRef<'a> {
        TxRef {
            transaction_id: &self.tx,
            event_time: r.event_time(),
            customer_id: &self.customer,
            terminal_id: &self.terminal,
            amount: r.amount,
        }
    }
    pub fn label_ref<'a>(&'a self, r: &HandbookRow) -> LabelRef<'a> {
        LabelRef {
            transaction_id: &self.tx,
            terminal_id: &self.terminal,
            event_time: r.event_time(),
            is_fraud: r.fraud == 1,
        }
    }
}

fn open(path: &Path) -> Result<Box<dyn Read>, DatasetError> {
    let f = File::open(path).map_err(|source| DatasetError::Open {
        path: path.display().to_string(),
        source,
    })?;
    let r = BufReader::with_capacity(1 << 20, f);
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(r)))
    } else {
        Ok(Box::new(r))
    }
}

/// Streams the rows of a handbook CSV, calling `f` on each until it
/// returns `Ok(false)`. Returns the number of rows read.
pub fn for_each_row<E: From<DatasetError>>(
    path: &Path,
    mut f: impl FnMut(HandbookRow) -> Result<bool, E>,
) -> Result<u64, E> {
    let mut rdr = csv::Reader::from_reader(open(path)?);
    let mut n = 0;
    for rec in rdr.deserialize::<HandbookRow>() {
        let row = rec.map_err(|e| DatasetError::Row {
            path: path.display().to_string(),
            line: e.position().map_or(0, |p| p.line()),
            detail: e.to_string(),
        })?;
        n += 1;
        if !f(row)? {
            break;
        }
    }
    Ok(n)
}

/// Reads all rows whose day index lies in `[from_day, to_day]` (inclusive).
pub fn read_rows(
    path: &Path,
    from_day: Option<i64>,
    to_day: Option<i64>,
) -> Result<Vec<HandbookRow>, DatasetError> {
    let mut out = Vec::new();
    for_each_row::<DatasetError>(path, |r| {
        if from_day.is_none_or(|d| r.time_days >= d) && to_day.is_none_or(|d| r.time_days <= d) {
            out.push(r);
        }
        Ok(true)
    })?;
    Ok(out)
}

/// Day index (0 = 2018-04-01) of a `YYYY-MM-DD` date.
pub fn day_index(date: &str) -> Result<i64, DatasetError> {
    let bad = || DatasetError::Date(date.to_string());
    let mut it = date.split('-');
    let y: i64 = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let m: i64 = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let d: i64 = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    if it.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, d) - days_from_civil(2018, 4, 1))
}

/// `YYYY-MM-DD` of a day index.
pub fn date_of_day(day: i64) -> String {
    let z = days_from_civil(2018, 4, 1) + day;
    let (y, m, d) = civil_from_days(z);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_index_round_trips() {
        assert_eq!(day_index("2018-04-01").unwrap(), 0);
        assert_eq!(day_index("2018-07-01").unwrap(), 91);
        assert_eq!(day_index("2018-08-08").unwrap(), 129);
        assert_eq!(date_of_day(129), "2018-08-08");
        assert!(day_index("2018-13-01").is_err());
        assert!(day_index("yesterday").is_err());
    }
}
