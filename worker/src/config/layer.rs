//! What every config section shares: one struct serves the config file
//! (serde, unknown keys refused), the environment and the flags (clap reads
//! the variable when the flag is absent, so the flag wins). Every field is
//! optional so that absence is visible; layers are merged field by field
//! ([`Layered::over`]) and defaults are applied once, when a section is
//! resolved into its stage's config.

use std::collections::BTreeMap;
use std::fmt::Display;

use serde::{Deserialize, Deserializer};

/// A layer of settings that can be laid over a lower one.
pub(crate) trait Layered {
    /// `self` where set, else `lower`.
    fn over(self, lower: Self) -> Self;
}

impl<T> Layered for Option<T> {
    fn over(self, lower: Self) -> Self {
        self.or(lower)
    }
}

/// Repeated `KEY=VALUE` options (librdkafka's): both layers' entries, the
/// lower layer's first, so that a key set in both ends with the upper value.
impl Layered for Vec<String> {
    fn over(self, lower: Self) -> Self {
        let mut all = lower;
        all.extend(self);
        all
    }
}

/// Declares a config section: the struct with its clap and serde derives
/// (unknown file keys refused) and its field-by-field [`Layered`] merge.
macro_rules! section {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default, Clone, PartialEq, clap::Args, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field: $ty ),*
        }

        impl $crate::config::layer::Layered for $name {
            fn over(self, lower: Self) -> Self {
                Self {
                    $( $field: $crate::config::layer::Layered::over(self.$field, lower.$field) ),*
                }
            }
        }
    };
}
pub(crate) use section;

/// A flag's help text with its default (the constant the resolution uses).
pub(crate) fn help(text: &str, default: impl Display) -> String {
    format!("{text} [default: {default}]")
}

/// The name a value enum's default has on the command line.
pub(crate) fn enum_name<T: clap::ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// `[kafka]` in the file: a table, read as the `KEY=VALUE` entries `--kafka` takes.
pub(crate) fn kafka_table<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let table = BTreeMap::<String, String>::deserialize(d)?;
    Ok(table.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// librdkafka options from the environment: `RISKSTREAM_KAFKA_SASL_PASSWORD`
/// → `sasl.password=…` (secrets usually come this way: never log them).
pub(crate) fn kafka_env() -> Vec<String> {
    let mut entries: Vec<String> = std::env::vars()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix("RISKSTREAM_KAFKA_")?;
            Some(format!(
                "{}={v}",
                key.to_ascii_lowercase().replace('_', ".")
            ))
        })
        .collect();
    entries.sort();
    entries
}

/// `KEY=VALUE` entries into a map, later entries winning. A malformed entry
/// is reported by its key part only: the value may be a secret.
pub(crate) fn kafka_options(
    entries: &[String],
    errors: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let mut kafka = BTreeMap::new();
    for kv in entries {
        match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                kafka.insert(k.trim().to_string(), v.to_string());
            }
            _ => errors.push(format!(
                "--kafka {:?}: expected KEY=VALUE",
                kv.split('=').next().unwrap_or_default()
            )),
        }
    }
    kafka
}
