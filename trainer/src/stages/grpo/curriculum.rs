//! Which prompts a GRPO step trains on: the curriculum, and the extra prompts dynamic sampling
//! draws.
//!
//! A group teaches only when its rewards differ, and a row whose completions always fail (or
//! always succeed) gives groups with no spread. So the curriculum keeps each training row's
//! running success — the share of its completions with a reward above 0, as decayed counts so
//! that recent steps weigh most — and draws a step's rows without replacement with weight
//! p·(1 − p), p its smoothed success (an unseen row: p = ½, the highest weight), floored so that
//! no row is ever out of reach. Without the curriculum every row weighs the same. The state is
//! part of each checkpoint, so a resumed run draws what the uninterrupted one would have.

use serde::{Deserialize, Serialize};
use unitforge_sandbox::rng::SplitMix64;

/// How much of a row's past counts remains each time it is scored again.
const DECAY: f64 = 0.7;
/// The least weight of a row relative to an unseen row's ¼: never out of reach.
const FLOOR: f64 = 0.01;

/// Each training row's running success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curriculum {
    /// Decayed count of completions with a reward above 0, per row.
    successes: Vec<f64>,
    /// Decayed count of scored completions, per row.
    trials: Vec<f64>,
    /// Whether rows are weighted by their success (otherwise drawn uniformly).
    weighted: bool,
}

impl Curriculum {
    pub fn new(rows: usize, weighted: bool) -> Self {
        Self {
            successes: vec![0.0; rows],
            trials: vec![0.0; rows],
            weighted,
        }
    }

    /// Row `row`'s smoothed success p = (s + ½) / (n + 1).
    pub fn success(&self, row: usize) -> f64 {
        (self.successes[row] + 0.5) / (self.trials[row] + 1.0)
    }

    /// Row `row`'s weight in a draw.
    pub fn weight(&self, row: usize) -> f64 {
        if !self.weighted {
            return 1.0;
        }
        let p = self.success(row);
        (p * (1.0 - p)).max(FLOOR)
    }

    /// A group of row `row` was scored: `successes` of its `trials` scored completions had a
    /// reward above 0.
    pub fn record(&mut self, row: usize, successes: usize, trials: usize) {
        if trials == 0 || row >= self.trials.len() {
            return;
        }
        self.successes[row] = DECAY * self.successes[row] + successes as f64;
        self.trials[row] = DECAY * self.trials[row] + trials as f64;
    }

    /// `count` distinct rows, none of `taken`, drawn by weight (fewer when too few are left).
    pub fn draw(&self, count: usize, taken: &[usize], rng: &mut SplitMix64) -> Vec<usize> {
        let mut weights: Vec<f64> = (0..self.trials.len()).map(|r| self.weight(r)).collect();
        for &row in taken {
            if let Some(w) = weights.get_mut(row) {
                *w = 0.0;
            }
        }
        let mut drawn = Vec::with_capacity(count);
        while drawn.len() < count {
            let total: f64 = weights.iter().sum();
            if total <= 0.0 {
                break;
            }
            let mut target = rng.uniform() * total;
            let mut pick = weights
                .iter()
                .rposition(|w| *w > 0.0)
                .expect("a weight left");
            for (row, w) in weights.iter().enumerate() {
                if *w > 0.0 && target < *w {
                    pick = row;
                    break;
                }
                target -= w;
            }
            weights[pick] = 0.0;
            drawn.push(pick);
        }
        drawn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_is_smoothed_and_running() {
        let mut c = Curriculum::new(3, true);
        assert_eq!(c.success(0), 0.5);
        assert_eq!(c.weight(0), 0.25);
        c.record(0, 0, 4);
        assert!((c.success(0) - 0.1).abs() < 1e-12); // 0.5 / 5
                                                     // Later successes outweigh old failures.
        c.record(0, 4, 4);
        let p = (4.0 + 0.5) / (0.7 * 4.0 + 4.0 + 1.0);
        assert!((c.success(0) - p).abs() < 1e-12);
        // A row always failed sinks towards the floor: s → 0, n → 8 / (1 − 0.7).
        for _ in 0..50 {
            c.record(1, 0, 8);
        }
        let p = 0.5 / (8.0 / 0.3 + 1.0);
        assert!(
            (c.weight(1) - p * (1.0 - p)).abs() < 1e-9,
            "{}",
            c.weight(1)
        );
        assert!(c.weight(1) < 0.02);
        for _ in 0..50 {
            c.record(2, 0, 1000);
        }
        assert_eq!(c.weight(2), FLOOR);
        // Unweighted: every row the same.
        assert_eq!(Curriculum::new(2, false).weight(1), 1.0);
    }

    #[test]
    fn draws_are_distinct_avoid_taken_rows_and_follow_the_weights() {
        let mut c = Curriculum::new(4, true);
        for _ in 0..20 {
            c.record(0, 0, 8); // always fails
            c.record(1, 8, 8); // always passes
            c.record(2, 4, 8); // half
        }
        let mut rng = SplitMix64::new(7);
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            let rows = c.draw(1, &[3], &mut rng);
            assert_eq!(rows.len(), 1);
            counts[rows[0]] += 1;
        }
        assert_eq!(counts[3], 0, "a taken row is never drawn");
        // The mixed row (p ≈ ½, weight ¼) against two rows of weight ≈ 0.018 each.
        let expected = c.weight(2) / (c.weight(0) + c.weight(1) + c.weight(2));
        assert!(expected > 0.85);
        let share = counts[2] as f64 / 4000.0;
        assert!(
            (share - expected).abs() < 0.03,
            "{counts:?} against {expected}"
        );
        let all = c.draw(10, &[], &mut rng);
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            vec![0, 1, 2, 3],
            "without replacement, as many as exist"
        );
    }
}
