//! `unitforge eval pareto`: several checkpoints' evaluation reports side by side — kill rate
//! against suite CPU time, the non-dominated front, a table — as `pareto.png`, `report.md` and
//! `report.json`.
//!
//! A checkpoint is on the front when no other one kills at least as many mutants with suites at
//! least as fast, and is strictly better in one of the two. Speed is the mean suite CPU time of
//! the checkpoint's passing suites; a checkpoint none of whose suites pass has no speed and
//! counts as the slowest.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::eval::report::{EvalReport, SuiteFigures};
use crate::plot::font_available;
use crate::TrainerError;

/// One checkpoint on the picture.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ParetoPoint {
    pub label: String,
    pub mean_kill_rate: f64,
    /// Mean suite CPU time of the passing suites (ms); `None` when none pass.
    pub mean_suite_cpu_ms: Option<f64>,
    pub on_front: bool,
    pub figures: SuiteFigures,
}

/// What `write_pareto` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ParetoReport {
    pub points: Vec<ParetoPoint>,
    /// The baselines of the first report (the same held-out rows for every checkpoint).
    pub reference: SuiteFigures,
    pub trivial: SuiteFigures,
}

/// Mark the non-dominated points: higher kill rate and lower CPU time are better.
pub fn mark_front(points: &mut [ParetoPoint]) {
    let cost = |p: &ParetoPoint| p.mean_suite_cpu_ms.unwrap_or(f64::INFINITY);
    let snapshot: Vec<(f64, f64)> = points.iter().map(|p| (p.mean_kill_rate, cost(p))).collect();
    for (index, point) in points.iter_mut().enumerate() {
        let (kill, cpu) = snapshot[index];
        point.on_front = !snapshot.iter().enumerate().any(|(other, &(k, c))| {
            other != index && k >= kill && c <= cpu && (k > kill || c < cpu)
        });
    }
}

fn plot_error(e: impl std::fmt::Display) -> TrainerError {
    TrainerError::Data(format!("cannot draw the Pareto picture: {e}"))
}

fn draw(points: &[ParetoPoint], path: &Path) -> Result<(), TrainerError> {
    let x_max = points
        .iter()
        .filter_map(|p| p.mean_suite_cpu_ms)
        .fold(1.0f64, f64::max)
        * 1.25;
    let y_max = points
        .iter()
        .map(|p| p.mean_kill_rate)
        .fold(0.05f64, f64::max)
        .min(1.0)
        * 1.2;
    let labelled = font_available();
    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(24);
    if labelled {
        builder
            .caption(
                "Kill rate against suite CPU time (up and left is better)",
                ("sans-serif", 22),
            )
            .x_label_area_size(44)
            .y_label_area_size(64);
    }
    let mut chart = builder
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(plot_error)?;
    let mut mesh = chart.configure_mesh();
    if labelled {
        mesh.x_desc("mean suite CPU time of passing suites (ms)")
            .y_desc("mean mutant kill rate");
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(plot_error)?;
    let at = |p: &ParetoPoint| (p.mean_suite_cpu_ms.unwrap_or(0.0), p.mean_kill_rate);
    let mut front: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.on_front && p.mean_suite_cpu_ms.is_some())
        .map(at)
        .collect();
    front.sort_by(|a, b| a.0.total_cmp(&b.0));
    let front_series = chart
        .draw_series(LineSeries::new(front, RED.stroke_width(2)))
        .map_err(plot_error)?;
    if labelled {
        front_series
            .label("non-dominated front")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    }
    for (index, point) in points.iter().enumerate() {
        // Points at the same place (several checkpoints without a passing suite, all at the
        // origin) stack their labels instead of printing them over each other.
        let same_place = points[..index]
            .iter()
            .filter(|other| at(other) == at(point))
            .count() as i32;
        let color = if point.on_front { RED } else { BLUE };
        let shape = if point.mean_suite_cpu_ms.is_some() {
            color.filled()
        } else {
            color.stroke_width(2)
        };
        let label = match (labelled, point.mean_suite_cpu_ms) {
            (false, _) => String::new(),
            (true, Some(_)) => point.label.clone(),
            (true, None) => format!("{} (no passing suite)", point.label),
        };
        // The marker, and its label a little above and to the right of it.
        chart
            .draw_series(std::iter::once(
                EmptyElement::at(at(point))
                    + Circle::new((0, 0), 6, shape)
                    + Text::new(
                        label,
                        (9, -20 - 18 * same_place),
                        ("sans-serif", 16).into_font(),
                    ),
            ))
            .map_err(plot_error)?;
    }
    if labelled {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

fn cell(value: Option<f64>, digits: usize) -> String {
    value.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn table_row(label: &str, f: &SuiteFigures) -> String {
    format!(
        "| {label} | {} | {:.1} % | {:.1} % | {:.3} | {:.3} | {:.3} | {} | {} | {} |\n",
        f.suites,
        100.0 * f.valid_pytest_rate,
        100.0 * f.pass_rate,
        f.mean_kill_rate,
        f.best_of_k_kill_rate,
        f.mean_composite,
        cell(f.mean_suite_cpu_ms, 2),
        cell(f.mean_stability, 3),
        cell(f.flaky_fraction, 3),
    )
}

/// Write `pareto.png`, `report.md` and `report.json` for `reports` (label, report) into `out`.
pub fn write_pareto(
    reports: &[(String, EvalReport)],
    out: &Path,
) -> Result<ParetoReport, TrainerError> {
    let first = reports
        .first()
        .ok_or_else(|| TrainerError::Config("no evaluation reports given".into()))?;
    let mut points: Vec<ParetoPoint> = reports
        .iter()
        .map(|(label, report)| ParetoPoint {
            label: label.clone(),
            mean_kill_rate: report.figures.mean_kill_rate,
            mean_suite_cpu_ms: report.figures.mean_suite_cpu_ms,
            on_front: false,
            figures: report.figures.clone(),
        })
        .collect();
    mark_front(&mut points);
    std::fs::create_dir_all(out).map_err(|e| TrainerError::Io(out.display().to_string(), e))?;
    draw(&points, &out.join("pareto.png"))?;
    let report = ParetoReport {
        points,
        reference: first.1.reference.clone(),
        trivial: first.1.trivial.clone(),
    };
    let mut md = format!(
        "# Pareto report\n\n{} held-out rows of `{}`, {} suite(s) per row, scored in the sandbox ({}).\n\n![kill rate against suite CPU time](pareto.png)\n\n",
        first.1.rows, first.1.data, first.1.samples_per_row, first.1.executor
    );
    md.push_str("| checkpoint | suites | valid pytest | pass | mean kill | best-of-K kill | mean composite | suite CPU ms | stability | flaky |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for point in &report.points {
        let label = if point.on_front {
            format!("**{}** (front)", point.label)
        } else {
            point.label.clone()
        };
        md.push_str(&table_row(&label, &point.figures));
    }
    md.push_str(&table_row("reference suites (human)", &report.reference));
    md.push_str(&table_row("trivial suite (`assert True`)", &report.trivial));
    md.push_str("\nKill rates and composites are means over every scored suite (a suite that does not pass kills nothing); CPU time, stability and the flaky share are over the passing suites.\n");
    let write = |name: &str, text: String| {
        std::fs::write(out.join(name), text)
            .map_err(|e| TrainerError::Io(out.join(name).display().to_string(), e))
    };
    write("report.md", md)?;
    write(
        "report.json",
        serde_json::to_string_pretty(&report).expect("report serialises") + "\n",
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(label: &str, kill: f64, cpu: Option<f64>) -> ParetoPoint {
        ParetoPoint {
            label: label.into(),
            mean_kill_rate: kill,
            mean_suite_cpu_ms: cpu,
            on_front: false,
            figures: SuiteFigures::default(),
        }
    }

    #[test]
    fn the_front_holds_exactly_the_non_dominated_checkpoints() {
        let mut points = vec![
            point("start", 0.10, Some(5.0)),
            point("sft", 0.30, Some(8.0)),
            point("mutant", 0.60, Some(20.0)),
            point("speed", 0.30, Some(2.0)),
            point("none pass", 0.0, None),
            point("worse", 0.25, Some(9.0)),
        ];
        mark_front(&mut points);
        let front: Vec<&str> = points
            .iter()
            .filter(|p| p.on_front)
            .map(|p| p.label.as_str())
            .collect();
        // sft is dominated by speed (same kill, faster); start by speed too; worse by both.
        assert_eq!(front, ["mutant", "speed"]);
    }
}
