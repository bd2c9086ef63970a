//! The loss-curve PNG every stage writes at its end (`loss_curve.png` beside `metrics.jsonl`).
//!
//! plotters draws text with a TrueType font it must be given; the binary ships none, so the first
//! of a few usual system fonts found is used (`UNITFORGE_FONT` names another). Without any font
//! the curve is still drawn, just without axis labels, so a missing font never fails training.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::TrainerError;

const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Register a system font under the name "sans-serif" once; whether one was found.
pub fn font_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let from_env = std::env::var("UNITFORGE_FONT").ok();
        let candidates = from_env
            .iter()
            .map(String::as_str)
            .chain(FONT_CANDIDATES.iter().copied());
        for path in candidates {
            if let Ok(bytes) = std::fs::read(path) {
                // plotters keeps fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        tracing::warn!("no TrueType font found (set UNITFORGE_FONT); the loss curve has no labels");
        false
    })
}

/// One named series of (step, value) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
    /// Draw markers instead of a line (sparse series such as eval loss).
    pub markers: bool,
}

fn plot_error(e: impl std::fmt::Display) -> TrainerError {
    TrainerError::Data(format!("cannot draw the loss curve: {e}"))
}

/// Draw `series` against the step into a PNG at `path`, `y_label` on the vertical axis.
pub fn line_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), TrainerError> {
    let points = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(_, y)| y.is_finite());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    let labelled = font_available();
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if labelled {
        builder
            .caption(title, ("sans-serif", 24))
            .x_label_area_size(40)
            .y_label_area_size(60);
    }
    let mut chart = builder
        .build_cartesian_2d(0f64..x_max, (y_min - pad)..(y_max + pad))
        .map_err(plot_error)?;
    let mut mesh = chart.configure_mesh();
    if labelled {
        mesh.x_desc("step").y_desc(y_label);
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(plot_error)?;
    let palette = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (index, s) in series.iter().enumerate() {
        let color = palette[index % palette.len()];
        let finite = s.points.iter().copied().filter(|(_, y)| y.is_finite());
        let drawn = if s.markers {
            chart.draw_series(finite.map(|p| Circle::new(p, 4, color.filled())))
        } else {
            chart.draw_series(LineSeries::new(finite, color.stroke_width(2)))
        }
        .map_err(plot_error)?;
        if labelled {
            drawn.label(s.name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
    }
    if labelled {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_with_the_curve_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.png");
        let train: Vec<(f64, f64)> = (1..=50).map(|s| (s as f64, 5.0 / s as f64)).collect();
        let eval = vec![(25.0, 0.4), (50.0, 0.2)];
        line_chart(
            &path,
            "test",
            "loss",
            &[
                Series {
                    name: "train",
                    points: train,
                    markers: false,
                },
                Series {
                    name: "eval",
                    points: eval,
                    markers: true,
                },
            ],
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // A white 900×540 image compresses to a few hundred bytes; lines and text make it larger.
        assert!(bytes.len() > 3000, "{} bytes", bytes.len());
    }
}
