//! Drift plots, as PNG: reference against current distribution of one
//! variable (cumulative distributions for continuous variables, shares of
//! ones for binary ones), and the timeline of when it drifted (the
//! statistic over its threshold per scale, raise and clear marked).

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{register_font as register_plotters_font, FontStyle};

use crate::drift::reference::VarReference;
use crate::drift::stats::quantile_sorted;

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

/// One variable's drift over time: per scale, the statistic over its
/// threshold at every hourly evaluation (1 is the threshold).
pub struct Timeline<'a> {
    pub name: &'a str,
    pub caption: &'a str,
    /// Scale labels ("1h", ...), in the order of each point's values.
    pub scales: &'a [String],
    /// (hour end in hours since the period's start, exceedance per scale).
    pub points: &'a [(f64, Vec<f64>)],
    /// Hours (same axis) at which the alert was raised and cleared.
    pub raised: &'a [f64],
    pub cleared: &'a [f64],
}

const SCALE_COLOURS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Light band behind the hours an alert was active, and the marks of its
/// raises and clears (drawn under the series, which stay visible).
const ALERT_BAND: RGBColor = RGBColor(255, 228, 228);
const RAISE: RGBColor = RGBColor(200, 0, 0);
const CLEAR: RGBColor = RGBColor(0, 140, 70);

/// Writes the timeline PNG: a line per scale, the threshold (dashed at 1),
/// the hours an alert was active as a light band under the lines, raises
/// (red) and clears (green) as thin lines under the series with a mark at
/// the top, and a ring on each scale's value that raised.
pub fn timeline_png(
    path: &Path,
    t: &Timeline<'_>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    register_font();
    let root = BitMapBackend::new(path, TIMELINE_SIZE).into_drawing_area();
    draw_timeline(&root, t)?;
    root.present()?;
    Ok(())
}

const TIMELINE_SIZE: (u32, u32) = (960, 480);

/// The alert's active spans: from each raise to the next clear (or the end).
fn active_spans(raised: &[f64], cleared: &[f64], end: f64) -> Vec<(f64, f64)> {
    raised
        .iter()
        .map(|&r| {
            let until = cleared
                .iter()
                .copied()
                .filter(|c| *c > r)
                .fold(end, f64::min);
            (r, until)
        })
        .collect()
}

/// The alert's active spans and its raise and clear marks, drawn before
/// the series so that they never hide them.
fn draw_alert_marks<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    t: &Timeline<'_>,
    x_max: f64,
    y_top: f64,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    DB::ErrorType: 'static,
{
    chart
        .draw_series(
            active_spans(t.raised, t.cleared, x_max)
                .into_iter()
                .map(|(a, b)| Rectangle::new([(a, 0.0), (b, y_top)], ALERT_BAND.filled())),
        )?
        .label("alert active")
        .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 20, y + 4)], ALERT_BAND.filled()));
    for (xs, colour, label) in [(t.raised, RAISE, "raised"), (t.cleared, CLEAR, "cleared")] {
        chart
            .draw_series(xs.iter().map(|&x| {
                PathElement::new(vec![(x, 0.0), (x, y_top)], colour.mix(0.45).stroke_width(1))
            }))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        chart.draw_series(
            xs.iter()
                .map(|&x| TriangleMarker::new((x, y_top * 0.985), 6, colour.filled())),
        )?;
    }
    Ok(())
}

fn draw_timeline<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    t: &Timeline<'_>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let x_max = t.points.last().map_or(1.0, |p| p.0).max(1.0);
    let y_top = t
        .points
        .iter()
        .flat_map(|p| p.1.iter().copied())
        .filter(|x| x.is_finite())
        .fold(1.5f64, f64::max)
        .min(50.0)
        * 1.1;
    let mut chart = ChartBuilder::on(root)
        .caption(format!("{}: {}", t.name, t.caption), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_top)?;
    chart
        .configure_mesh()
        .x_desc("hours since the start of the period")
        .y_desc("statistic / threshold")
        .draw()?;
    draw_alert_marks(&mut chart, t, x_max, y_top)?;
    for (k, label) in t.scales.iter().enumerate() {
        let colour = SCALE_COLOURS[k % SCALE_COLOURS.len()];
        let pts = t
            .points
            .iter()
            .map(|(x, v)| (*x, v.get(k).copied().unwrap_or(0.0).clamp(0.0, y_top)));
        chart
            .draw_series(LineSeries::new(pts, colour.stroke_width(1)))?
            .label(format!("{label} windows"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        // The value that raised, ringed.
        let over = t.points.iter().filter(|(x, v)| {
            t.raised.iter().any(|r| (r - x).abs() < 1e-9) && v.get(k).is_some_and(|e| *e > 1.0)
        });
        chart.draw_series(
            over.map(|(x, v)| Circle::new((*x, v[k].min(y_top)), 5, colour.stroke_width(2))),
        )?;
    }
    chart
        .draw_series(DashedLineSeries::new(
            [(0.0, 1.0), (x_max, 1.0)],
            6,
            4,
            BLACK.stroke_width(1),
        ))?
        .label("threshold")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RGB pixels of `t` drawn at the PNG's size.
    fn render(t: &Timeline<'_>) -> Vec<u8> {
        register_font();
        let (w, h) = TIMELINE_SIZE;
        let mut buf = vec![0u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, TIMELINE_SIZE).into_drawing_area();
            draw_timeline(&root, t).unwrap();
            root.present().unwrap();
        }
        buf
    }

    #[test]
    fn the_series_stays_visible_under_the_raise_and_clear_marks() {
        // Two days hourly; the 1 h windows spike over the threshold at hour
        // 30, which raised; cleared at hour 36.
        let points: Vec<(f64, Vec<f64>)> = (0..=48)
            .map(|h| {
                let spike = if h == 30 { 2.4 } else { 0.4 };
                (f64::from(h), vec![spike, 0.6, 0.3])
            })
            .collect();
        let scales = ["1h".to_string(), "6h".to_string(), "24h".to_string()];
        let timeline = |raised: &'static [f64], cleared: &'static [f64]| Timeline {
            name: "TX_AMOUNT",
            caption: "test",
            scales: &scales,
            points: &points,
            raised,
            cleared,
        };
        let plain = render(&timeline(&[], &[]));
        let marked = render(&timeline(&[30.0], &[36.0]));
        // Every pixel of a series line in the plot's right half (the
        // legend, upper left, differs by its extra entries) is still there.
        let (w, h) = (TIMELINE_SIZE.0 as usize, TIMELINE_SIZE.1 as usize);
        let mut series_pixels = 0;
        for y in 0..h {
            for x in w / 2..w {
                let i = (y * w + x) * 3;
                let px = &plain[i..i + 3];
                if SCALE_COLOURS[..3].iter().any(|c| px == [c.0, c.1, c.2]) {
                    series_pixels += 1;
                    assert_eq!(&marked[i..i + 3], px, "series pixel ({x}, {y}) covered");
                }
            }
        }
        assert!(series_pixels > 500, "{series_pixels}");
        // The marks are drawn: the active span's band is there.
        let band = marked
            .chunks(3)
            .filter(|p| *p == [ALERT_BAND.0, ALERT_BAND.1, ALERT_BAND.2])
            .count();
        assert!(band > 1000, "{band}");
    }
}
