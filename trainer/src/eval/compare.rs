//! Paired comparison of two checkpoints evaluated on the same held-out rows (`unitforge eval
//! compare`): for each figure, the mean over rows of (other's row mean − base's row mean) with
//! its 95 % bootstrap interval (`interval.rs`). Pairing by row removes what the rows themselves
//! contribute (an easy row is easy for both), so a small, consistent gain shows where two
//! unpaired intervals would overlap.

use serde::Serialize;

use crate::eval::interval::{paired_difference, Interval};
use crate::eval::report::{EvalReport, Scoring, SuiteScore};
use crate::TrainerError;

/// One figure's paired difference.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PairedFigure {
    pub name: &'static str,
    /// Mean over rows of other − base.
    pub difference: f64,
    pub interval: Interval,
}

/// `other` against `base`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Comparison {
    pub base: String,
    pub other: String,
    /// Rows both reports scored.
    pub rows: usize,
    pub figures: Vec<PairedFigure>,
}

/// A figure's name, the scoring it reads and what it reads of each suite.
type Figure = (&'static str, Scoring, fn(&SuiteScore) -> f64);

/// The figures compared.
const FIGURES: [Figure; 5] = [
    ("pruned mean composite", Scoring::Pruned, |s| s.composite),
    ("pruned mean kill rate", Scoring::Pruned, |s| s.mutant_kill),
    ("mean composite (as written)", Scoring::Strict, |s| {
        s.composite
    }),
    ("mean kill rate (as written)", Scoring::Strict, |s| {
        s.mutant_kill
    }),
    ("pass rate (as written)", Scoring::Strict, |s| {
        f64::from(u8::from(s.passed))
    }),
];

/// Compare `other` with `base` on the rows both scored.
pub fn compare(
    (base_name, base): (&str, &EvalReport),
    (other_name, other): (&str, &EvalReport),
) -> Result<Comparison, TrainerError> {
    if base.data != other.data {
        return Err(TrainerError::Data(format!(
            "{base_name} was evaluated on {} and {other_name} on {}: a paired comparison needs the same rows",
            base.data, other.data
        )));
    }
    let mut figures = Vec::new();
    let mut rows = 0;
    for (name, scoring, f) in FIGURES {
        let (a, b) = (base.row_means(scoring, f), other.row_means(scoring, f));
        let (left, right): (Vec<f64>, Vec<f64>) = a
            .iter()
            .filter_map(|(row, x)| b.get(row).map(|y| (*x, *y)))
            .unzip();
        rows = rows.max(left.len());
        if let Some((difference, interval)) = paired_difference(&left, &right) {
            figures.push(PairedFigure {
                name,
                difference,
                interval,
            });
        }
    }
    Ok(Comparison {
        base: base_name.to_string(),
        other: other_name.to_string(),
        rows,
        figures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report whose row r has one suite with composite `composite(r)` both ways.
    fn report(data: &str, composite: impl Fn(usize) -> f64) -> EvalReport {
        let score = |c: f64| {
            serde_json::json!({"passed": c > 0.0, "mutant_kill": c, "composite": c,
                "speed": 1.0, "stability": 1.0, "suite_cpu_ms": 1.0})
        };
        let rows: Vec<serde_json::Value> = (0..40)
            .map(|r| {
                let suite = serde_json::json!({"valid_pytest": true,
                    "scored": score(composite(r)), "pruned": score(composite(r))});
                serde_json::json!({"row": r, "module": "m", "samples": [suite],
                    "trivial": {"valid_pytest": true, "scored": score(0.0)}, "tests": [""]})
            })
            .collect();
        let figures = serde_json::to_value(crate::eval::report::SuiteFigures::default()).unwrap();
        serde_json::from_value(serde_json::json!({"model": "m", "data": data, "rows": 40,
            "samples_per_row": 1, "seed": 0, "executor": "local", "figures": figures,
            "reference": figures, "trivial": figures, "per_row": rows}))
        .unwrap()
    }

    #[test]
    fn a_consistent_gain_is_seen_and_mismatched_rows_are_refused() {
        let base = report("eval", |r| (r % 5) as f64 / 5.0);
        let better = report("eval", |r| (r % 5) as f64 / 5.0 + 0.01);
        let comparison = compare(("sft", &base), ("grpo", &better)).unwrap();
        assert_eq!(comparison.rows, 40);
        let composite = &comparison.figures[0];
        assert_eq!(composite.name, "pruned mean composite");
        assert!((composite.difference - 0.01).abs() < 1e-12);
        assert!(composite.interval.excludes_zero());
        let same = compare(("sft", &base), ("sft again", &base)).unwrap();
        assert!(same.figures.iter().all(|f| f.difference == 0.0));
        assert!(compare(("sft", &base), ("other", &report("train", |_| 0.0))).is_err());
    }
}
