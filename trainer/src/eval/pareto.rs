//! `unitforge eval pareto`: several checkpoints' evaluation reports side by side — kill rate
//! against suite CPU time, the non-dominated front, a table — as `pareto.png`, `report.md` and
//! `report.json`.
//!
//! The picture reads the pruned figures (the suites a user keeps: failing, flaky and repeated
//! tests removed) where the reports have them, the as-written ones otherwise. A checkpoint is on
//! the front when no other one kills at least as many mutants with suites at least as fast, and
//! is strictly better in one of the two. Speed is the mean suite CPU time of the checkpoint's
//! passing suites; a checkpoint none of whose suites pass has no speed and counts as the
//! slowest. The human reference suites and the trivial suite are drawn as fixed points beside
//! the checkpoints (never on the front), so the picture has a scale even when every checkpoint
//! is at the origin.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::eval::interval::with_interval;
use crate::eval::report::{EvalReport, SuiteFigures};
use crate::plot::font_available;
use crate::TrainerError;

/// One checkpoint on the picture.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ParetoPoint {
    pub label: String,
    /// Of the pruned suites where the report has them.
    pub mean_kill_rate: f64,
    /// Mean suite CPU time of the passing (pruned) suites (ms); `None` when none pass.
    pub mean_suite_cpu_ms: Option<f64>,
    pub on_front: bool,
    /// As written.
    pub figures: SuiteFigures,
    /// Pruned (absent in reports from before pruning).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruned: Option<SuiteFigures>,
}

impl ParetoPoint {
    /// A point at `figures` (the pruned ones when given).
    fn new(label: &str, figures: &SuiteFigures, pruned: Option<&SuiteFigures>) -> Self {
        let plotted = pruned.unwrap_or(figures);
        Self {
            label: label.to_string(),
            mean_kill_rate: plotted.mean_kill_rate,
            mean_suite_cpu_ms: plotted.mean_suite_cpu_ms,
            on_front: false,
            figures: figures.clone(),
            pruned: pruned.cloned(),
        }
    }
}

/// What `write_pareto` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ParetoReport {
    pub points: Vec<ParetoPoint>,
    /// The baselines of the first report (the same held-out rows for every checkpoint), drawn
    /// as fixed points.
    pub reference: ParetoPoint,
    pub trivial: ParetoPoint,
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

/// Label text size and where a label sits from its marker (pixels: right, up), and the height
/// of one line of labels.
const LABEL_FONT: u32 = 16;
const LABEL_DX: i32 = 9;
const LABEL_DY: i32 = -20;
const LABEL_LINE: i32 = 18;

/// A label's width in pixels, estimated: DejaVu Sans at 16 px averages under 9 px a character.
fn label_width(text: &str) -> i32 {
    9 * text.chars().count() as i32
}

/// A label's box in pixels (left, top, right, bottom) for its marker at `anchor`, `line` lines
/// above its usual place.
fn label_box((x, y): (i32, i32), width: i32, line: i32) -> (i32, i32, i32, i32) {
    let top = y + LABEL_DY - LABEL_LINE * line;
    (x + LABEL_DX, top, x + LABEL_DX + width, top + LABEL_LINE)
}

/// Whether two boxes share pixels (touching edges do not).
fn boxes_meet(a: (i32, i32, i32, i32), b: (i32, i32, i32, i32)) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

/// For each label at `anchors` (its marker's pixel position), the line above its usual place it
/// goes on: the lowest line on which its box meets no box of a label placed before it.
fn label_lines(anchors: &[(i32, i32)], widths: &[i32]) -> Vec<i32> {
    let mut placed: Vec<(i32, i32, i32, i32)> = Vec::with_capacity(anchors.len());
    let mut lines = Vec::with_capacity(anchors.len());
    for (&anchor, &width) in anchors.iter().zip(widths) {
        let line = (0..)
            .find(|&line| {
                let candidate = label_box(anchor, width, line);
                width == 0 || !placed.iter().any(|&other| boxes_meet(candidate, other))
            })
            .expect("some line above is free");
        if width > 0 {
            placed.push(label_box(anchor, width, line));
        }
        lines.push(line);
    }
    lines
}

fn draw(points: &[ParetoPoint], fixed: &[&ParetoPoint], path: &Path) -> Result<(), TrainerError> {
    let everything = || points.iter().chain(fixed.iter().copied());
    let x_max = everything()
        .filter_map(|p| p.mean_suite_cpu_ms)
        .fold(1.0f64, f64::max)
        * 1.25;
    let y_max = everything()
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
    // Every label (checkpoints first, then the baselines) gets a line of its own where it
    // would overlap one already placed: near points stack their labels instead of printing
    // them over each other.
    let texts: Vec<String> = points
        .iter()
        .map(|point| match (labelled, point.mean_suite_cpu_ms) {
            (false, _) => String::new(),
            (true, Some(_)) => point.label.clone(),
            (true, None) => format!("{} (no passing suite)", point.label),
        })
        .chain(fixed.iter().map(|point| {
            if labelled {
                point.label.clone()
            } else {
                String::new()
            }
        }))
        .collect();
    let anchors: Vec<(i32, i32)> = everything().map(|p| chart.backend_coord(&at(p))).collect();
    let widths: Vec<i32> = texts.iter().map(|t| label_width(t)).collect();
    let lines = label_lines(&anchors, &widths);
    for (index, ((point, text), line)) in everything().zip(texts).zip(lines).enumerate() {
        let text = Text::new(
            text,
            (LABEL_DX, LABEL_DY - LABEL_LINE * line),
            ("sans-serif", LABEL_FONT).into_font(),
        );
        let marker = EmptyElement::at(at(point));
        if index < points.len() {
            // A checkpoint: a circle (hollow when no suite passes), red on the front.
            let color = if point.on_front { RED } else { BLUE };
            let shape = if point.mean_suite_cpu_ms.is_some() {
                color.filled()
            } else {
                color.stroke_width(2)
            };
            chart
                .draw_series(std::iter::once(
                    marker + Circle::new((0, 0), 6, shape) + text,
                ))
                .map_err(plot_error)?;
        } else {
            // A baseline: a black square, never on the front.
            chart
                .draw_series(std::iter::once(
                    marker + Rectangle::new([(-6, -6), (6, 6)], BLACK.filled()) + text,
                ))
                .map_err(plot_error)?;
        }
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

fn table_row(point: &ParetoPoint) -> String {
    let f = &point.figures;
    // Speed, stability and flakiness describe the same suites: the pruned ones where the report
    // has them (the picture's), else the suites as written.
    let passing = point.pruned.as_ref().unwrap_or(f);
    let pruned =
        |get: &dyn Fn(&SuiteFigures) -> String| point.pruned.as_ref().map_or("–".to_string(), get);
    let label = if point.on_front {
        format!("**{}** (front)", point.label)
    } else {
        point.label.clone()
    };
    format!(
        "| {label} | {} | {:.1} % | {} % | {} | {} % | {} | {} | {} | {} | {} |\n",
        f.suites,
        100.0 * f.valid_pytest_rate,
        with_interval(f.pass_rate, f.pass_rate_ci, 100.0, 1),
        with_interval(f.mean_kill_rate, f.mean_kill_rate_ci, 1.0, 3),
        pruned(&|p| with_interval(p.pass_rate, p.pass_rate_ci, 100.0, 1)),
        pruned(&|p| with_interval(p.mean_kill_rate, p.mean_kill_rate_ci, 1.0, 3)),
        pruned(&|p| with_interval(p.mean_composite, p.mean_composite_ci, 1.0, 3)),
        cell(point.mean_suite_cpu_ms, 2),
        cell(passing.mean_stability, 3),
        cell(passing.flaky_fraction, 3),
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
        .map(|(label, report)| {
            ParetoPoint::new(
                label,
                &report.figures,
                report.pruned.as_ref().map(|p| &p.figures),
            )
        })
        .collect();
    mark_front(&mut points);
    let baseline = &first.1;
    let report = ParetoReport {
        points,
        reference: ParetoPoint::new(
            "human reference suites",
            &baseline.reference,
            baseline.pruned.as_ref().map(|p| &p.reference),
        ),
        trivial: ParetoPoint::new(
            "trivial suite (assert True)",
            &baseline.trivial,
            baseline.pruned.as_ref().map(|p| &p.trivial),
        ),
    };
    std::fs::create_dir_all(out).map_err(|e| TrainerError::Io(out.display().to_string(), e))?;
    draw(
        &report.points,
        &[&report.reference, &report.trivial],
        &out.join("pareto.png"),
    )?;
    let mut md = format!(
        "# Pareto report\n\n{} held-out rows of `{}`, {} suite(s) per row, scored in the sandbox ({}).\n\n![kill rate against suite CPU time](pareto.png)\n\n",
        first.1.rows, first.1.data, first.1.samples_per_row, first.1.executor
    );
    md.push_str("| checkpoint | suites | valid pytest | pass (as written) | mean kill (as written) | pass (pruned) | mean kill (pruned) | mean composite (pruned) | suite CPU ms | stability | flaky |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for point in &report.points {
        md.push_str(&table_row(point));
    }
    md.push_str(&table_row(&report.reference));
    md.push_str(&table_row(&report.trivial));
    md.push_str("\nAs written: a suite with one failing test passes nothing and kills nothing. Pruned: the failing, flaky and repeated tests removed and the rest scored, its composite discounted by the share kept (docs/rewards.md); \"pass\" is then the share of suites with something kept. Kill rates and composites are means over every scored suite; [low, high] is a 95 % bootstrap interval over rows. CPU time, stability and the flaky share are over the passing suites, pruned where the report has them.\n");
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
            pruned: None,
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

    #[test]
    fn speed_stability_and_flakiness_in_the_table_read_the_same_suites() {
        // Nothing passes as written; pruned, the suites pass, run in 2.5 ms, and a tenth flake.
        let mut sft = point("sft", 0.3, Some(2.5));
        sft.pruned = Some(SuiteFigures {
            mean_suite_cpu_ms: Some(2.5),
            mean_stability: Some(0.95),
            flaky_fraction: Some(0.1),
            ..SuiteFigures::default()
        });
        let row = table_row(&sft);
        assert!(row.ends_with("| 2.50 | 0.950 | 0.100 |\n"), "{row}");
        // A report from before pruning reads its suites as written.
        let mut old = point("old", 0.3, Some(4.0));
        old.figures.mean_stability = Some(1.0);
        old.figures.flaky_fraction = Some(0.0);
        assert!(table_row(&old).ends_with("| 4.00 | 1.000 | 0.000 |\n"));
    }

    #[test]
    fn labels_of_near_points_go_on_lines_of_their_own_and_far_ones_stay_put() {
        // Three checkpoints a few pixels apart (a picture's "sft", "grpo-speed", "grpo-mutant"
        // at nearly the same kill rate), one far away, one at the same place as the first.
        let anchors = [(400, 300), (392, 300), (420, 300), (800, 100), (400, 300)];
        let widths = [30, 90, 100, 120, 30];
        let lines = label_lines(&anchors, &widths);
        assert_eq!(lines, [0, 1, 2, 0, 3]);
        // No two label boxes overlap.
        let boxes: Vec<(i32, i32, i32, i32)> = anchors
            .iter()
            .zip(widths)
            .zip(&lines)
            .map(|((&anchor, width), &line)| label_box(anchor, width, line))
            .collect();
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[i + 1..] {
                assert!(!boxes_meet(*a, *b), "{a:?} overlaps {b:?}");
            }
        }
        // The boxes themselves, by hand: the first label sits 9 px right of and 20 px above its
        // marker, one line (18 px) high; touching boxes do not meet.
        assert_eq!(label_box((400, 300), 30, 0), (409, 280, 439, 298));
        assert!(!boxes_meet((0, 0, 10, 10), (10, 0, 20, 10)));
        assert!(boxes_meet((0, 0, 10, 10), (9, 9, 20, 20)));
        // An empty label (no font) takes no room.
        assert_eq!(label_lines(&[(0, 0), (0, 0)], &[0, 40]), [0, 0]);
    }
}
