//! Plots: ROC and precision-recall curves as PNG (plotters, embedded font).

use std::path::Path;

use plotters::prelude::*;

use super::metrics::threshold_sweep;
/// The embedded font lives with the drift plots (below train in the layering).
pub use crate::report::plots::register_font;

/// (x, y) points of the ROC curve (FPR, TPR).
pub fn roc_points(scores: &[f32], labels: &[bool]) -> Vec<(f64, f64)> {
    let p = labels.iter().filter(|l| **l).count().max(1) as f64;
    let n = (labels.len() as f64 - p).max(1.0);
    std::iter::once((0.0, 0.0))
        .chain(
            threshold_sweep(scores, labels)
                .into_iter()
                .map(|(_, tp, fp)| (fp / n, tp / p)),
        )
        .collect()
}

/// (recall, precision) points.
pub fn pr_points(scores: &[f32], labels: &[bool]) -> Vec<(f64, f64)> {
    let p = labels.iter().filter(|l| **l).count().max(1) as f64;
    threshold_sweep(scores, labels)
        .into_iter()
        .map(|(_, tp, fp)| (tp / p, tp / (tp + fp)))
        .collect()
}

fn curve_png(
    path: &Path,
    title: &str,
    xl: &str,
    yl: &str,
    series: &[Vec<(f64, f64)>],
) -> Result<(), Box<dyn std::error::Error>> {
    register_font();
    let root = BitMapBackend::new(path, (640, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
    chart.configure_mesh().x_desc(xl).y_desc(yl).draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.iter().copied(), color.stroke_width(2)))?
            .label(format!("fold {i}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Writes roc.png and pr.png; returns their file names.
pub fn roc_pr(
    dir: &Path,
    curves: &[(Vec<f32>, Vec<bool>)],
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let roc: Vec<_> = curves.iter().map(|(s, l)| roc_points(s, l)).collect();
    let pr: Vec<_> = curves.iter().map(|(s, l)| pr_points(s, l)).collect();
    curve_png(
        &dir.join("roc.png"),
        "ROC",
        "false positive rate",
        "true positive rate",
        &roc,
    )?;
    curve_png(
        &dir.join("pr.png"),
        "Precision-recall",
        "recall",
        "precision",
        &pr,
    )?;
    Ok(vec!["roc.png".into(), "pr.png".into()])
}
