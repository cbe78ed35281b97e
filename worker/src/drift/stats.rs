//! The drift statistics of the reference and of `riskstream drift`: the
//! bin of a value, PSI over reference bins, the two-sample
//! Kolmogorov–Smirnov statistic, moments and quantiles. Pure functions on
//! slices; `tests/drift.rs` checks them against scipy's values
//! (`tests/fixtures/drift`, computed by `scripts/drift_fixtures.py`).

/// Floor for bin shares in PSI, so an empty bin gives a large but finite term.
pub const PSI_FLOOR: f64 = 1e-4;

/// Index of the bin of `v` for bins split at `edges` (bin i holds
/// `edges[i-1] < v <= edges[i]`; the last bin is open above).
pub fn bin_of(edges: &[f64], v: f64) -> usize {
    edges.partition_point(|e| *e < v)
}

/// Population stability index of the `current` counts against the
/// `reference` counts over the same bins: Σ (c − r) · ln(c / r) over bin
/// shares, each share floored at [`PSI_FLOOR`].
pub fn psi(reference: &[u64], current: &[u64]) -> f64 {
    let rn = reference.iter().sum::<u64>().max(1) as f64;
    let cn = current.iter().sum::<u64>().max(1) as f64;
    reference
        .iter()
        .zip(current)
        .map(|(&r, &c)| {
            let r = (r as f64 / rn).max(PSI_FLOOR);
            let c = (c as f64 / cn).max(PSI_FLOOR);
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// Two-sample Kolmogorov–Smirnov statistic: the largest distance between
/// the empirical CDFs of two sorted samples (ties handled: both CDFs are
/// evaluated after every distinct value).
pub fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / na - j as f64 / nb).abs());
    }
    d
}

/// Mean and population standard deviation.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Value at quantile `p` of a sorted sample (nearest rank).
pub fn quantile_sorted(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}
