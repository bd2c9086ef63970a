//! Reward formulas and the reward config (YAML) that parameterises them.
//!
//! Every reward is in [0, 1]. The formulas, with their reasons, are in `docs/rewards.md`:
//!
//! - `validity` = 1 if the suite parses, collects ≥ 1 test and every test passes on the CUT.
//! - `mutant_kill` = killed / scored mutants (timeouts are kills; equivalent, unviable and
//!   infrastructure-excluded mutants are not scored).
//! - `speed` = τ / (τ + t), t = the suite's own CPU time (median over the stability runs, less
//!   the runner's measured per-run overhead), τ = `speed.reference_ms`.
//! - `stability` = runs whose per-test outcomes equal the first run's / runs.
//! - `robustness` = variants on which the suite passes / variants.
//! - `composite` = validity × (w_k·kill + kill·(w_s·speed + w_t·stability + w_r·robustness)) / Σw.
//!   Speed, stability and robustness pay only in proportion to the kill rate, so a trivial suite
//!   (fast, stable, passes everywhere, kills nothing) scores 0.
//! - Under `failing_tests: prune`, the suite is first pruned of the tests that fail, error or are
//!   flaky on the code under test and of repeated tests (`prune.rs`), the rest is scored as
//!   above, and the composite is multiplied by kept / max(collected, `prune_min_tests`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::mutant::MutantConfig;
use crate::protocol::RunLimits;
use crate::prune::FailingTests;
use crate::timeouts::TimeoutConfig;
use crate::variant::VariantConfig;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    pub mutant_kill: f64,
    pub speed: f64,
    pub stability: f64,
    pub robustness: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            mutant_kill: 0.6,
            speed: 0.1,
            stability: 0.15,
            robustness: 0.15,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpeedConfig {
    /// τ: the suite CPU time (ms) at which speed = 0.5.
    pub reference_ms: f64,
}

impl Default for SpeedConfig {
    fn default() -> Self {
        Self {
            reference_ms: 100.0,
        }
    }
}

/// The default floor on a pruned suite's count (`prune_min_tests`).
pub const DEFAULT_PRUNE_FLOOR: usize = 3;

fn is_default_prune_floor(floor: &usize) -> bool {
    *floor == DEFAULT_PRUNE_FLOOR
}

/// Everything that decides a score. Part of every cache key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RewardConfig {
    pub weights: Weights,
    /// Composite given to an invalid suite (in [0, 1]; 0 = no better than no tests).
    pub invalid_composite: f64,
    /// Runs for speed and stability, the baseline included; runs after the first are shuffled
    /// and seeded differently.
    pub runs: usize,
    /// Whether a `deny` reach in the test file (see `suite.rs`) makes the suite invalid.
    pub deny_reaches_invalidate: bool,
    /// What a test failing on the code under test does: invalidate the suite, or be pruned
    /// from it (`prune.rs`). Left out of the serialised config at its default, so that the
    /// cache keys of `invalidate` scores stay what they were.
    #[serde(skip_serializing_if = "FailingTests::is_invalidate")]
    pub failing_tests: FailingTests,
    /// Under `prune`: the composite is multiplied by kept / max(collected, this).
    #[serde(skip_serializing_if = "is_default_prune_floor")]
    pub prune_min_tests: usize,
    pub speed: SpeedConfig,
    pub mutants: MutantConfig,
    pub variants: VariantConfig,
    pub timeouts: TimeoutConfig,
    pub limits: RunLimits,
}

impl Default for RewardConfig {
    fn default() -> Self {
        Self {
            weights: Weights::default(),
            invalid_composite: 0.0,
            runs: 3,
            deny_reaches_invalidate: true,
            failing_tests: FailingTests::Invalidate,
            prune_min_tests: DEFAULT_PRUNE_FLOOR,
            speed: SpeedConfig::default(),
            mutants: MutantConfig::default(),
            variants: VariantConfig::default(),
            timeouts: TimeoutConfig::default(),
            limits: RunLimits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: serde_yaml_ng::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl RewardConfig {
    pub fn from_yaml_file(path: &Path) -> Result<Self, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        Self::from_yaml_str(&text, &display)
    }

    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: RewardConfig =
            serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Parse {
                path: origin.into(),
                source,
            })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: origin.into(),
            message,
        })?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), String> {
        let w = &self.weights;
        let all = [w.mutant_kill, w.speed, w.stability, w.robustness];
        if all.iter().any(|x| !x.is_finite() || *x < 0.0) || all.iter().sum::<f64>() <= 0.0 {
            return Err("weights must be non-negative with a positive sum".into());
        }
        if !(0.0..=1.0).contains(&self.invalid_composite) {
            return Err("invalid_composite must be in [0, 1]".into());
        }
        if self.runs == 0 {
            return Err("runs must be at least 1".into());
        }
        if self.speed.reference_ms.is_nan() || self.speed.reference_ms <= 0.0 {
            return Err("speed.reference_ms must be positive".into());
        }
        let t = &self.timeouts;
        if [t.baseline_s, t.factor, t.floor_s]
            .iter()
            .any(|x| !x.is_finite() || *x <= 0.0)
            || [t.slack_s, t.test_factor, t.test_floor_s]
                .iter()
                .any(|x| !x.is_finite() || *x < 0.0)
        {
            return Err(
                "timeouts must be positive (slack_s, test_factor and test_floor_s may be 0)".into(),
            );
        }
        Ok(())
    }
}

/// speed = τ / (τ + t).
pub fn speed_reward(suite_cpu_ms: f64, reference_ms: f64) -> f64 {
    let t = suite_cpu_ms.max(0.0);
    reference_ms / (reference_ms + t)
}

/// The composite reward, in [0, 1].
pub fn composite_reward(
    config: &RewardConfig,
    valid: bool,
    kill: f64,
    speed: f64,
    stability: f64,
    robustness: f64,
) -> f64 {
    if !valid {
        return config.invalid_composite;
    }
    let w = &config.weights;
    let total = w.mutant_kill + w.speed + w.stability + w.robustness;
    let secondary = w.speed * speed + w.stability * stability + w.robustness * robustness;
    ((w.mutant_kill * kill + kill * secondary) / total).clamp(0.0, 1.0)
}

/// Median of a non-empty slice (mean of the middle two for even lengths); 0 for empty.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_by_hand() {
        let config = RewardConfig::default();
        // 0.6·0.5 + 0.5·(0.1·1 + 0.15·1 + 0.15·1) = 0.3 + 0.2 = 0.5; Σw = 1.
        assert!((composite_reward(&config, true, 0.5, 1.0, 1.0, 1.0) - 0.5).abs() < 1e-12);
        assert_eq!(composite_reward(&config, true, 1.0, 1.0, 1.0, 1.0), 1.0);
    }

    #[test]
    fn trivial_suite_gets_nothing_however_fast_and_stable() {
        let config = RewardConfig::default();
        assert_eq!(composite_reward(&config, true, 0.0, 1.0, 1.0, 1.0), 0.0);
    }

    #[test]
    fn invalid_gets_the_configured_composite() {
        let mut config = RewardConfig::default();
        assert_eq!(composite_reward(&config, false, 1.0, 1.0, 1.0, 1.0), 0.0);
        config.invalid_composite = 0.05;
        assert_eq!(composite_reward(&config, false, 1.0, 1.0, 1.0, 1.0), 0.05);
    }

    #[test]
    fn speed_is_half_at_the_reference() {
        assert_eq!(speed_reward(100.0, 100.0), 0.5);
        assert_eq!(speed_reward(-3.0, 100.0), 1.0);
        assert!((speed_reward(300.0, 100.0) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn yaml_rejects_unknown_keys_and_bad_values() {
        assert!(RewardConfig::from_yaml_str("weights:\n  mutant_kill: 1\n", "t").is_ok());
        let err = RewardConfig::from_yaml_str("weigths: {}\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("weigths"), "{err}");
        assert!(RewardConfig::from_yaml_str("runs: 0\n", "t").is_err());
    }
}
