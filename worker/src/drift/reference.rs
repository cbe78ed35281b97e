//! The drift reference: the training-set distribution of every engine
//! feature and of the score, written by `riskstream train` as
//! `reference.json` beside the weights and loaded by the worker with the
//! model. Continuous variables keep decile bin edges and counts (PSI), a
//! quantile sketch (KS, Wasserstein) and moments; binary ones their share
//! of ones.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::profile::{Column, Profile};
use super::stats::{bin_of, mean_std, quantile_sorted};
use super::DriftError;
use crate::features::{FeatureVector, BINARY_FEATURES, FEATURE_NAMES};

/// Name of the score among the watched variables (reports, gauges).
pub const SCORE: &str = "SCORE";
/// Name of the flagged-fraud rate among the watched variables.
pub const FLAGGED: &str = "FLAGGED";
/// File beside the weights.
pub const REFERENCE_FILE: &str = "reference.json";
/// Points of the quantile sketch: the values at quantiles (i + ½) / N.
pub const SKETCH_POINTS: usize = 1000;

/// Reference distribution of one variable.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum VarReference {
    Continuous {
        n: u64,
        mean: f64,
        std: f64,
        min: f64,
        max: f64,
        /// Decile edges (duplicates removed); bin i holds edges[i-1] < v <= edges[i].
        bin_edges: Vec<f64>,
        bin_counts: Vec<u64>,
        /// Values at quantiles (i + ½) / N, i = 0..N: a stratified sample of
        /// the training distribution for KS and Wasserstein.
        #[serde(default)]
        sketch: Vec<f64>,
        /// A single value holding at least half of the mass (zero-inflated
        /// inputs such as terminal risk): its share is tested like a binary one.
        #[serde(default)]
        atom: Option<Atom>,
    },
    Binary {
        n: u64,
        share_of_ones: f64,
    },
}

impl VarReference {
    /// Summarises `values` (any order).
    pub fn of(values: &[f64], binary: bool) -> Self {
        if binary {
            let ones = values.iter().filter(|v| **v > 0.5).count();
            return VarReference::Binary {
                n: values.len() as u64,
                share_of_ones: ones as f64 / values.len().max(1) as f64,
            };
        }
        let (mean, std) = mean_std(values);
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = (1..10)
            .map(|i| quantile_sorted(&sorted, f64::from(i) / 10.0))
            .collect();
        edges.dedup();
        edges.retain(|e| e.is_finite());
        let mut counts = vec![0u64; edges.len() + 1];
        for v in &sorted {
            counts[bin_of(&edges, *v)] += 1;
        }
        let sketch = if sorted.is_empty() {
            Vec::new()
        } else {
            (0..SKETCH_POINTS)
                .map(|i| {
                    let p = (i as f64 + 0.5) / SKETCH_POINTS as f64;
                    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
                })
                .collect()
        };
        VarReference::Continuous {
            n: values.len() as u64,
            mean,
            std,
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
            bin_edges: edges,
            bin_counts: counts,
            atom: atom_of(&sorted),
            sketch,
        }
    }

    pub fn n(&self) -> u64 {
        match self {
            VarReference::Continuous { n, .. } | VarReference::Binary { n, .. } => *n,
        }
    }

    /// Decile edges of a continuous variable (none for a binary one).
    pub fn bin_edges(&self) -> &[f64] {
        match self {
            VarReference::Continuous { bin_edges, .. } => bin_edges,
            VarReference::Binary { .. } => &[],
        }
    }
}

/// A value with a large share of the distribution.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Atom {
    pub value: f64,
    pub share: f64,
}

/// Smallest share of a single value that makes it an [`Atom`].
pub const ATOM_MIN_SHARE: f64 = 0.5;

/// The most frequent value of a sorted sample, if it holds at least [`ATOM_MIN_SHARE`].
fn atom_of(sorted: &[f64]) -> Option<Atom> {
    let (mut best, mut best_n, mut i) = (f64::NAN, 0usize, 0usize);
    while i < sorted.len() {
        let j = i + sorted[i..].partition_point(|x| *x <= sorted[i]);
        if j - i > best_n {
            best = sorted[i];
            best_n = j - i;
        }
        i = j.max(i + 1);
    }
    let share = best_n as f64 / sorted.len().max(1) as f64;
    (share >= ATOM_MIN_SHARE).then_some(Atom { value: best, share })
}

/// The reference of a model version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reference {
    /// Every engine feature, by name.
    pub features: BTreeMap<String, VarReference>,
    /// The model's score on the training rows.
    pub score: VarReference,
    /// Share of training rows at or above the threshold.
    pub flagged_rate: f64,
    /// Time profile and calibration of every variable (drift's thresholds);
    /// absent in references written before it existed: rebuild them with
    /// `riskstream models reference`.
    #[serde(default)]
    pub profile: Option<Profile>,
}

impl Reference {
    /// The reference of training rows, their scores at `threshold` and
    /// their event times (ms).
    pub fn build(rows: &[FeatureVector], scores: &[f32], threshold: f32, times: &[i64]) -> Self {
        let mut features = BTreeMap::new();
        let mut columns = Vec::new();
        for (j, name) in FEATURE_NAMES.iter().enumerate() {
            let col: Vec<f64> = rows.iter().map(|r| r[j]).collect();
            let r = VarReference::of(&col, BINARY_FEATURES[j]);
            columns.push(Column {
                name,
                bin_edges: r.bin_edges().to_vec(),
                values: col,
                binary: BINARY_FEATURES[j],
            });
            features.insert(name.to_string(), r);
        }
        let s: Vec<f64> = scores.iter().map(|&x| f64::from(x)).collect();
        let flags: Vec<f64> = scores
            .iter()
            .map(|&x| f64::from(u8::from(x >= threshold)))
            .collect();
        let flagged = flags.iter().sum::<f64>() / scores.len().max(1) as f64;
        let score = VarReference::of(&s, false);
        columns.push(Column {
            name: SCORE,
            bin_edges: score.bin_edges().to_vec(),
            values: s,
            binary: false,
        });
        columns.push(Column {
            name: FLAGGED,
            bin_edges: Vec::new(),
            values: flags,
            binary: true,
        });
        Reference {
            features,
            score,
            flagged_rate: flagged,
            profile: Some(Profile::build(&columns, times)),
        }
    }

    /// The reference of a watched variable: a feature, `SCORE` or `FLAGGED`
    /// (the flagged rate as a binary share). Unknown names get an empty one.
    pub fn of(&self, name: &str) -> VarReference {
        match name {
            SCORE => self.score.clone(),
            FLAGGED => VarReference::Binary {
                n: self.score.n(),
                share_of_ones: self.flagged_rate,
            },
            f => self
                .features
                .get(f)
                .cloned()
                .unwrap_or(VarReference::Binary {
                    n: 0,
                    share_of_ones: 0.0,
                }),
        }
    }

    pub fn read(dir: &Path) -> Result<Self, DriftError> {
        let path = dir.join(REFERENCE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| DriftError::ReadReference {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| DriftError::ParseReference {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn write(&self, dir: &Path) -> Result<(), DriftError> {
        let path = dir.join(REFERENCE_FILE);
        let text =
            serde_json::to_string(self).map_err(|source| DriftError::SerialiseReference {
                path: path.display().to_string(),
                source,
            })?;
        std::fs::write(&path, text + "\n").map_err(|source| DriftError::WriteReference {
            path: path.display().to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_and_sketch_describe_the_values() {
        let v: Vec<f64> = (0..1000).map(f64::from).collect();
        let VarReference::Continuous {
            bin_counts,
            sketch,
            n,
            atom,
            ..
        } = VarReference::of(&v, false)
        else {
            panic!("continuous expected");
        };
        assert_eq!(n, 1000);
        assert_eq!(atom, None);
        assert_eq!(bin_counts.iter().sum::<u64>(), 1000);
        assert!(
            bin_counts.iter().all(|c| (95..=105).contains(c)),
            "{bin_counts:?}"
        );
        assert_eq!(sketch.len(), SKETCH_POINTS);
        let zeros: Vec<f64> = (0..100)
            .map(|i| if i < 70 { 0.0 } else { f64::from(i) })
            .collect();
        let VarReference::Continuous { atom, .. } = VarReference::of(&zeros, false) else {
            panic!("continuous expected");
        };
        assert_eq!(
            atom,
            Some(Atom {
                value: 0.0,
                share: 0.7
            })
        );
        assert!(sketch.windows(2).all(|w| w[0] <= w[1]));
        let VarReference::Binary { share_of_ones, .. } =
            VarReference::of(&[0.0, 1.0, 1.0, 1.0], true)
        else {
            panic!("binary expected");
        };
        assert_eq!(share_of_ones, 0.75);
    }
}
