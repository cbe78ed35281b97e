//! Drift plots: reference against current distribution of one variable, as
//! PNG (cumulative distributions for continuous variables, shares of ones
//! for binary ones).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{register_font as register_plotters_font, FontStyle};

use super::reference::VarReference;
use super::stats::quantile_sorted;

const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Registers the embedded font as "sans-serif" (twice is harmless); shared
/// with the training plots.
pub fn register_font() {
    let _ = register_plotters_font("sans-serif", FontStyle::Normal, FONT);
}

/// A drawing area of the PNG being written.
type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Writes the plot of `current` (sorted) against `reference`.
pub fn distribution_png(
    path: &Path,
    name: &str,
    reference: &VarReference,
    current: &[f64],
    caption: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    register_font();
    let root = BitMapBackend::new(path, (720, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!("{name}: {caption}");
    match reference {
        VarReference::Continuous { sketch, .. } => {
            cumulative_chart(&root, &title, name, sketch, current)?
        }
        VarReference::Binary { share_of_ones, .. } => {
            share_chart(&root, &title, *share_of_ones, current)?
        }
    }
    root.present()?;
    Ok(())
}

/// Cumulative distributions of a continuous variable: the reference sketch
/// (blue) and `current`, sorted (red).
fn cumulative_chart(
    root: &Area<'_>,
    title: &str,
    name: &str,
    sketch: &[f64],
    current: &[f64],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let lo = sketch
        .first()
        .copied()
        .unwrap_or(0.0)
        .min(quantile_sorted(current, 0.005));
    let hi = sketch
        .last()
        .copied()
        .unwrap_or(1.0)
        .max(quantile_sorted(current, 0.995));
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(lo..hi, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc(name)
        .y_desc("cumulative share")
        .draw()?;
    let n = sketch.len().max(1) as f64;
    let reference_pts = sketch
        .iter()
        .enumerate()
        .map(|(i, x)| (x.clamp(lo, hi), (i as f64 + 0.5) / n));
    chart
        .draw_series(LineSeries::new(reference_pts, BLUE.stroke_width(2)))?
        .label("reference (training)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    let step = (current.len() / 2000).max(1);
    let m = current.len().max(1) as f64;
    let current_pts = current
        .iter()
        .enumerate()
        .step_by(step)
        .map(|(i, x)| (x.clamp(lo, hi), (i as f64 + 1.0) / m));
    chart
        .draw_series(LineSeries::new(current_pts, RED.stroke_width(2)))?
        .label("current")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Share of ones of a binary variable: reference (blue) and current (red) bars.
fn share_chart(
    root: &Area<'_>,
    title: &str,
    share_of_ones: f64,
    current: &[f64],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let cur = current.iter().filter(|x| **x > 0.5).count() as f64 / current.len().max(1) as f64;
    let top = (share_of_ones.max(cur) * 1.3).max(1e-3);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..2f64, 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|_| String::new())
        .x_desc(format!(
            "reference {share_of_ones:.4} (blue), current {cur:.4} (red)"
        ))
        .y_desc("share of ones")
        .draw()?;
    chart.draw_series([
        Rectangle::new([(0.2, 0.0), (0.8, share_of_ones)], BLUE.filled()),
        Rectangle::new([(1.2, 0.0), (1.8, cur)], RED.filled()),
    ])?;
    Ok(())
}
