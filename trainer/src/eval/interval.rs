//! The uncertainty of a held-out figure: a percentile bootstrap over rows.
//!
//! A figure such as the mean composite is the mean over rows of each row's mean over its K
//! suites; which rows happen to be held out is the main source of its uncertainty, so rows are
//! resampled with replacement ([`RESAMPLES`] times, seeded: the same report gives the same
//! interval) and the 2.5th and 97.5th percentiles of the resampled means bound a 95 % interval.
//! Two checkpoints evaluated on the same rows are compared by the paired difference of their
//! row means, resampled the same way: an interval that excludes 0 is a difference the row
//! sample does not explain.

use serde::{Deserialize, Serialize};
use unitforge_sandbox::rng::SplitMix64;

/// Bootstrap resamples per interval.
pub const RESAMPLES: usize = 2000;
const SEED: u64 = 0x5EED_B007;

/// A 95 % interval.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    pub fn excludes_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

/// `value [low, high]` (each × `scale`, with `digits` decimals), or `value` alone without an
/// interval: how tables print a figure.
pub fn with_interval(value: f64, interval: Option<Interval>, scale: f64, digits: usize) -> String {
    match interval {
        Some(ci) => format!(
            "{:.digits$} [{:.digits$}, {:.digits$}]",
            scale * value,
            scale * ci.low,
            scale * ci.high
        ),
        None => format!("{:.digits$}", scale * value),
    }
}

/// The mean of `per_row` and its 95 % bootstrap interval (`None` without rows).
pub fn bootstrap_mean(per_row: &[f64]) -> Option<(f64, Interval)> {
    if per_row.is_empty() {
        return None;
    }
    let n = per_row.len();
    let mean = per_row.iter().sum::<f64>() / n as f64;
    let mut rng = SplitMix64::new(SEED ^ n as u64);
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let sum: f64 = (0..n)
                .map(|_| per_row[(rng.next_u64() % n as u64) as usize])
                .sum();
            sum / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (RESAMPLES - 1) as f64).round() as usize).min(RESAMPLES - 1)];
    Some((
        mean,
        Interval {
            low: at(0.025),
            high: at(0.975),
        },
    ))
}

/// The mean paired difference `other − base` over rows both have, with its 95 % interval.
pub fn paired_difference(base: &[f64], other: &[f64]) -> Option<(f64, Interval)> {
    let differences: Vec<f64> = base.iter().zip(other).map(|(b, o)| o - b).collect();
    bootstrap_mean(&differences)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_matches_the_normal_approximation_on_many_rows() {
        // 400 rows of a fixed, skew-free pattern: sd known in closed form.
        let rows: Vec<f64> = (0..400).map(|i| f64::from(i % 5) / 4.0).collect();
        let (mean, interval) = bootstrap_mean(&rows).unwrap();
        assert!((mean - 0.5).abs() < 1e-12);
        // Values 0, ¼, ½, ¾, 1 equally often: population variance 0.125.
        let half_width = 1.96 * (0.125f64 / 400.0).sqrt();
        for (got, want) in [
            (interval.low, 0.5 - half_width),
            (interval.high, 0.5 + half_width),
        ] {
            assert!((got - want).abs() < 0.15 * half_width, "{got} vs {want}");
        }
    }

    #[test]
    fn constant_rows_have_no_width_and_pairs_see_shifts() {
        let (mean, interval) = bootstrap_mean(&[0.3; 50]).unwrap();
        assert!((mean - 0.3).abs() < 1e-12);
        assert!((interval.high - interval.low).abs() < 1e-12);
        assert!(bootstrap_mean(&[]).is_none());
        // A small shift on every row is clear once paired, though the rows vary a lot.
        let base: Vec<f64> = (0..60).map(|i| f64::from(i % 7) / 7.0).collect();
        let other: Vec<f64> = base.iter().map(|b| b + 0.02).collect();
        let (diff, interval) = paired_difference(&base, &other).unwrap();
        assert!((diff - 0.02).abs() < 1e-12);
        assert!(interval.excludes_zero());
        // Noise around no shift is not.
        let noisy: Vec<f64> = base
            .iter()
            .enumerate()
            .map(|(i, b)| b + if i % 2 == 0 { 0.05 } else { -0.05 })
            .collect();
        let (_, interval) = paired_difference(&base, &noisy).unwrap();
        assert!(!interval.excludes_zero(), "{interval:?}");
    }
}
