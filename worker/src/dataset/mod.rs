//! Dataset: reading the handbook's transaction CSV (plain or gzip) into
//! typed rows, turning rows into wire records (transactions and labels),
//! and computing their features offline ([`featurise`]). [`topic`] reads a
//! topic back as JSON records (what a stream run leaves behind).
//!
//! Event time in epoch ms is `1522540800000 + 1000 * TX_TIME_SECONDS`
//! (2018-04-01 00:00:00 UTC plus the offset); see the data README.

pub mod topic;

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use serde::Deserialize;
use time::Date;

use crate::codec::{FraudLabel, Transaction};
use crate::features::{FeatureEngine, FeatureVector, LabelRef, TxRef, DAY_MS, DELAY_DAYS};

/// 2018-04-01 00:00:00 UTC in epoch ms: time zero of the data set.
pub const EPOCH_2018_04_01_MS: i64 = 1_522_540_800_000;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot open {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, line {line}: bad row")]
    BadRow {
        path: String,
        line: u64,
        #[source]
        source: csv::Error,
    },
    #[error("bad date {date:?}: expected YYYY-MM-DD")]
    Date {
        date: String,
        #[source]
        source: time::error::Parse,
    },
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
        let row = rec.map_err(|source| DatasetError::BadRow {
            path: path.display().to_string(),
            line: source.position().map_or(0, |p| p.line()),
            source,
        })?;
        n += 1;
        if !f(row)? {
            break;
        }
    }
    Ok(n)
}

/// Rows with their features, computed by one pass of the engine in
/// transaction order (labels fed as the stream would: the engine only
/// reads labels older than the delay).
pub struct Featurised {
    pub rows: Vec<HandbookRow>,
    pub features: Vec<FeatureVector>,
    /// How far back the engine's state reached at the end.
    pub history: crate::features::History,
}

/// Computes features for every row of the CSV up to `last_day`, keeping
/// the rows with `keep(day)`.
pub fn featurise(
    csv: &Path,
    last_day: i64,
    keep: impl Fn(i64) -> bool,
) -> Result<Featurised, DatasetError> {
    let mut engine = FeatureEngine::new();
    let mut out = Featurised {
        rows: Vec::new(),
        features: Vec::new(),
        history: Default::default(),
    };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message("computing features");
    for_each_row::<DatasetError>(csv, |r| {
        if r.time_days > last_day {
            return Ok(false);
        }
        let ids = RowIds::of(&r);
        let f = engine.observe_transaction(ids.tx_ref(&r));
        engine.observe_label(ids.label_ref(&r));
        if keep(r.time_days) {
            out.rows.push(r);
            out.features.push(f);
        }
        if out.rows.len().is_multiple_of(100_000) {
            bar.tick();
        }
        Ok(true)
    })?;
    bar.finish_and_clear();
    out.history = engine.history();
    Ok(out)
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

/// Day 0 of the data set as a calendar date.
const DAY_ZERO: Date = time::macros::date!(2018 - 04 - 01);

/// `YYYY-MM-DD`, the date format of the reports.
const ISO_DATE: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

/// Dates read from the CLI: `YYYY-MM-DD`, month and day also unpadded.
const DATE_INPUT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month padding:none]-[day padding:none]");

/// Day index (0 = 2018-04-01) of a `YYYY-MM-DD` date.
pub fn day_index(date: &str) -> Result<i64, DatasetError> {
    let parsed = Date::parse(date, DATE_INPUT).map_err(|source| DatasetError::Date {
        date: date.to_string(),
        source,
    })?;
    Ok((parsed - DAY_ZERO).whole_days())
}

/// `YYYY-MM-DD` of a day index.
pub fn date_of_day(day: i64) -> String {
    // Within ±2^31 days `Duration::days` cannot overflow; further out no
    // calendar date exists.
    i32::try_from(day)
        .ok()
        .and_then(|d| DAY_ZERO.checked_add(time::Duration::days(d.into())))
        .map_or_else(|| format!("day {day}"), format_date)
}

/// `YYYY-MM-DD HH:MM` (UTC) of an epoch-ms timestamp.
pub fn minute_of_ms(ms: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// `YYYY-MM-DD` (UTC) of an epoch-ms timestamp.
pub fn date_of_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .map_or_else(|_| format!("{ms} ms"), |t| format_date(t.date()))
}

fn format_date(d: Date) -> String {
    d.format(ISO_DATE)
        .unwrap_or_else(|_| format!("{}-{}-{}", d.year(), u8::from(d.month()), d.day()))
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

    #[test]
    fn dates_come_from_the_calendar() {
        assert!(day_index("2018-02-30").is_err());
        assert_eq!(day_index("2018-4-1").unwrap(), 0);
        assert_eq!(day_index("2018-03-31").unwrap(), -1);
        assert_eq!(date_of_day(-1), "2018-03-31");
        assert_eq!(
            date_of_ms(EPOCH_2018_04_01_MS + 1000 * 86_399),
            "2018-04-01"
        );
        assert_eq!(date_of_ms(-1), "1969-12-31");
    }
}
