//! Ranking metrics as scikit-learn computes them: ROC AUC (ties averaged)
//! and average precision (step-wise, no interpolation).

/// Area under the ROC curve. None when one class is absent.
pub fn roc_auc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let n_pos = labels.iter().filter(|l| **l).count() as f64;
    let n_neg = labels.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return None;
    }
    // Mann–Whitney U with average ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in &idx[i..=j] {
            if labels[*k] {
                rank_sum += avg;
            }
        }
        i = j + 1;
    }
    Some((rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}

/// One point per distinct score, from the highest down: the score and the
/// true and false positives at or above it.
pub fn threshold_sweep(scores: &[f32], labels: &[bool]) -> Vec<(f32, f64, f64)> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut out = Vec::new();
    for (k, &i) in idx.iter().enumerate() {
        if labels[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        if k + 1 == idx.len() || scores[idx[k + 1]] != scores[i] {
            out.push((scores[i], tp, fp));
        }
    }
    out
}

/// Average precision: Σ (R_n − R_{n−1}) P_n over distinct thresholds.
pub fn average_precision(scores: &[f32], labels: &[bool]) -> Option<f64> {
    let n_pos = labels.iter().filter(|l| **l).count() as f64;
    if n_pos == 0.0 {
        return None;
    }
    let mut prev_recall = 0.0;
    let mut ap = 0.0;
    for (_, tp, fp) in threshold_sweep(scores, labels) {
        let recall = tp / n_pos;
        ap += (recall - prev_recall) * tp / (tp + fp);
        prev_recall = recall;
    }
    Some(ap)
}

/// The threshold maximising F1, with that F1.
pub fn best_f1_threshold(scores: &[f32], labels: &[bool]) -> (f32, f64) {
    let n_pos = labels.iter().filter(|l| **l).count() as f64;
    let mut best = (0.5f32, 0.0f64);
    if n_pos == 0.0 {
        return best;
    }
    for (t, tp, fp) in threshold_sweep(scores, labels) {
        let f1 = 2.0 * tp / (tp + fp + n_pos);
        if f1 > best.1 {
            best = (t, f1);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_scikit_learn_on_a_small_case() {
        // sklearn: roc_auc_score([0,0,1,1],[0.1,0.4,0.35,0.8]) = 0.75
        //          average_precision_score(...) = 0.8333333333333333
        let s = [0.1, 0.4, 0.35, 0.8];
        let l = [false, false, true, true];
        assert!((roc_auc(&s, &l).unwrap() - 0.75).abs() < 1e-12);
        assert!((average_precision(&s, &l).unwrap() - 0.833_333_333_333_333_3).abs() < 1e-12);
        // Constant scores: AUC 0.5, AP = prevalence.
        let c = [0.3; 4];
        assert!((roc_auc(&c, &l).unwrap() - 0.5).abs() < 1e-12);
        assert!((average_precision(&c, &l).unwrap() - 0.5).abs() < 1e-12);
        let (t, f1) = best_f1_threshold(&s, &l);
        assert_eq!(t, 0.35);
        assert!((f1 - 0.8).abs() < 1e-12);
    }
}
