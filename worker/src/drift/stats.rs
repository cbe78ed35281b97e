//! The drift statistics: PSI over reference bins, two-sample
//! Kolmogorov–Smirnov with its asymptotic p-value, Wasserstein-1 between
//! empirical distributions, and a chi-squared goodness-of-fit test for
//! binary variables. Pure functions on slices; fixtures in `tests/fixtures/drift`
//! were computed with scipy (see `scripts/drift_fixtures.py`).

use statrs::distribution::{ChiSquared, ContinuousCDF};

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

/// Survival function of the Kolmogorov distribution,
/// P(K > x) = 2 Σ_{k≥1} (−1)^{k−1} e^{−2k²x²} (scipy's `kstwobign.sf`).
pub fn kolmogorov_sf(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x < 0.2 {
        // The alternating series converges slowly here; use the dual form
        // P(K ≤ x) = √(2π)/x Σ e^{−(2k−1)²π²/(8x²)}.
        let s: f64 = (1..=20)
            .map(|k| {
                let k = f64::from(2 * k - 1);
                (-k * k * std::f64::consts::PI.powi(2) / (8.0 * x * x)).exp()
            })
            .sum();
        return 1.0 - (2.0 * std::f64::consts::PI).sqrt() / x * s;
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let k = f64::from(k);
        let term = (-2.0 * k * k * x * x).exp();
        sum += if k as i64 % 2 == 1 { term } else { -term };
        if term < 1e-300 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Asymptotic p-value of a two-sample KS statistic `d` for sample sizes
/// `n` and `m`: `kolmogorov_sf(d · √(nm/(n+m)))`.
pub fn ks_pvalue(d: f64, n: usize, m: usize) -> f64 {
    if n == 0 || m == 0 {
        return 1.0;
    }
    let (n, m) = (n as f64, m as f64);
    kolmogorov_sf(d * (n * m / (n + m)).sqrt())
}

/// Wasserstein-1 (earth mover's) distance between the empirical
/// distributions of two sorted samples: ∫ |F_a(x) − F_b(x)| dx.
pub fn wasserstein(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut x = a[0].min(b[0]);
    let mut area = 0.0;
    while i < a.len() || j < b.len() {
        let next = match (a.get(i), b.get(j)) {
            (Some(&u), Some(&v)) => u.min(v),
            (Some(&u), None) => u,
            (None, Some(&v)) => v,
            (None, None) => break,
        };
        area += (i as f64 / na - j as f64 / nb).abs() * (next - x);
        x = next;
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
    }
    area
}

/// Chi-squared goodness of fit of `ones` out of `m` against an expected
/// share `p` (one degree of freedom). Returns (statistic, p-value); a
/// degenerate reference (p = 0 or 1) gives p-value 0 when the window
/// disagrees and 1 when it agrees.
pub fn chi2_binary(ones: u64, m: u64, p: f64) -> (f64, f64) {
    if m == 0 {
        return (0.0, 1.0);
    }
    let m_f = m as f64;
    let (e1, e0) = (m_f * p, m_f * (1.0 - p));
    let (o1, o0) = (ones as f64, m_f - ones as f64);
    if e1 <= 0.0 || e0 <= 0.0 {
        let agrees = (e1 <= 0.0 && o1 == 0.0) || (e0 <= 0.0 && o0 == 0.0);
        return if agrees {
            (0.0, 1.0)
        } else {
            (f64::INFINITY, 0.0)
        };
    }
    let x2 = (o1 - e1).powi(2) / e1 + (o0 - e0).powi(2) / e0;
    let pv = ChiSquared::new(1.0).map_or(f64::NAN, |c| c.sf(x2));
    (x2, pv)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_samples_show_no_drift() {
        let a: Vec<f64> = (0..100).map(f64::from).collect();
        assert_eq!(ks_statistic(&a, &a), 0.0);
        assert_eq!(wasserstein(&a, &a), 0.0);
        assert!(psi(&[10, 20, 30], &[1, 2, 3]).abs() < 1e-12);
        assert!((ks_pvalue(0.0, 100, 100) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn shifted_samples_move_each_statistic() {
        let a: Vec<f64> = (0..100).map(f64::from).collect();
        let b: Vec<f64> = a.iter().map(|x| x + 10.0).collect();
        assert!((wasserstein(&a, &b) - 10.0).abs() < 1e-9);
        assert!((ks_statistic(&a, &b) - 0.10).abs() < 1e-12);
        let (x2, p) = chi2_binary(60, 100, 0.5);
        assert!((x2 - 4.0).abs() < 1e-12);
        assert!((p - 0.0455).abs() < 1e-3, "{p}");
    }

    #[test]
    fn kolmogorov_series_agree_where_they_meet() {
        // Both forms near the switch point and known values of scipy.stats.kstwobign.sf.
        assert!((kolmogorov_sf(1.0) - 0.269_999_671_677_355_8).abs() < 1e-12);
        assert!((kolmogorov_sf(1.358_098_8) - 0.05).abs() < 1e-6);
        let below = kolmogorov_sf(0.199_999_9);
        let above = kolmogorov_sf(0.200_000_1);
        assert!((below - above).abs() < 1e-6, "{below} {above}");
    }
}
