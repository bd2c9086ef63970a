//! Time limits: a generous one for the baseline run, and one derived from it for mutant runs.
//!
//! A mutant that loops forever must cost a fraction of a second, not mutmut's ten: its limit is
//! `factor × baseline wall time + slack`, kept between a floor (so scheduling noise on a busy
//! machine is never mistaken for a hang) and the baseline limit.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutConfig {
    /// Limit for the baseline (unmutated) run and for stability and variant runs, in seconds.
    pub baseline_s: f64,
    /// Mutant limit = factor × baseline wall time + slack, clamped to [floor, baseline_s].
    pub factor: f64,
    pub slack_s: f64,
    pub floor_s: f64,
    /// Per-test budget in mutant runs = test_factor × the slowest baseline test's call time,
    /// at least test_floor_s, counted in CPU time (load does not use it up). Stops a looping
    /// test long before the run's limit.
    pub test_factor: f64,
    pub test_floor_s: f64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            baseline_s: 20.0,
            factor: 4.0,
            slack_s: 0.1,
            floor_s: 0.25,
            test_factor: 10.0,
            test_floor_s: 0.03,
        }
    }
}

impl TimeoutConfig {
    /// The limit for a mutant run, given the baseline run's wall time in seconds.
    pub fn mutant_timeout_s(&self, baseline_wall_s: f64) -> f64 {
        let derived = self.factor * baseline_wall_s.max(0.0) + self.slack_s;
        derived
            .max(self.floor_s)
            .min(self.baseline_s.max(self.floor_s))
    }

    /// The budget of each test in a mutant run, given the slowest baseline test's time.
    pub fn test_budget_s(&self, slowest_test_s: f64) -> f64 {
        (self.test_factor * slowest_test_s.max(0.0)).max(self.test_floor_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_from_baseline_with_floor_and_ceiling() {
        let config = TimeoutConfig::default();
        assert_eq!(config.mutant_timeout_s(0.02), 0.25);
        assert!((config.mutant_timeout_s(1.0) - 4.1).abs() < 1e-12);
        assert_eq!(config.mutant_timeout_s(100.0), 20.0);
        assert_eq!(config.test_budget_s(0.001), 0.03);
        assert!((config.test_budget_s(0.05) - 0.5).abs() < 1e-12);
    }
}
