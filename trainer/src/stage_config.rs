//! Stage configs: the typed settings every stage reads (`StageConfig`, with each stage's own
//! section), loaded from a YAML file plus `--set key=value` overrides (dotted keys for nested
//! fields). An unknown key is an error that names it.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

use crate::generate::SamplingConfig;
use crate::lora::LoraConfig;
use crate::optim::AdamWConfig;
use crate::TrainerError;

fn default_dtype() -> String {
    "f32".into()
}

/// A stage's YAML config (`configs/sft.yaml`, `configs/distill_gkd.yaml`): the loop's settings,
/// shared by every stage, plus the distillation section only `train distill` reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    pub base_model: PathBuf,
    pub output_dir: PathBuf,
    pub train_data: PathBuf,
    pub eval_data: PathBuf,
    pub max_steps: usize,
    pub batch_size: usize,
    #[serde(default = "one")]
    pub grad_accum: usize,
    pub learning_rate: f64,
    #[serde(default)]
    pub warmup_steps: usize,
    #[serde(default = "tenth")]
    pub min_lr_ratio: f64,
    #[serde(default = "one_f")]
    pub max_grad_norm: f64,
    pub max_len: usize,
    #[serde(default = "fifty")]
    pub eval_every: usize,
    /// Held-out batches per evaluation (0 = all).
    #[serde(default)]
    pub eval_batches: usize,
    #[serde(default = "hundred")]
    pub save_every: usize,
    #[serde(default)]
    pub seed: u64,
    /// `f32`, `bf16` or `f16`.
    #[serde(default = "default_dtype")]
    pub dtype: String,
    #[serde(default)]
    pub full_finetune: bool,
    #[serde(default)]
    pub quantize_base: bool,
    #[serde(default)]
    pub lora: LoraConfig,
    #[serde(default)]
    pub adamw: AdamWConfig,
    /// Continue from the latest checkpoint in `output_dir`.
    #[serde(default)]
    pub resume: bool,
    /// End this invocation after this step (writing a checkpoint), to continue later with
    /// `resume: true`; the schedule still runs to `max_steps`.
    #[serde(default)]
    pub stop_at: Option<usize>,
    /// Show a progress bar.
    #[serde(default = "yes")]
    pub progress: bool,
    /// Chance that a training example's prompt shows a semantics-preserving variant of its code
    /// (renamed locals, perturbed comments) instead of the code itself; 0 turns it off.
    #[serde(default)]
    pub augment_variants: f64,
    /// Also write the merged model (base + adapter) in Hugging Face layout. Full fine-tuning
    /// always writes it (there is no adapter).
    #[serde(default = "yes")]
    pub save_merged: bool,
    /// The teacher checkpoint of `train distill` (absent: the data's `teacher_logprobs`).
    #[serde(default)]
    pub teacher_model: Option<PathBuf>,
    /// Loss weights and settings of `train distill`.
    #[serde(default)]
    pub distill: DistillSettings,
}

fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}
fn tenth() -> f64 {
    0.1
}
fn fifty() -> usize {
    50
}
fn hundred() -> usize {
    100
}
fn yes() -> bool {
    true
}

/// The `distill:` section of a stage config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DistillSettings {
    pub ce_weight: f64,
    pub jsd_weight: f64,
    pub rkl_weight: f64,
    /// JSD interpolation: 0 = forward KL(T‖S), 0.5 = symmetric JSD, 1 = reverse KL(S‖T).
    pub beta: f64,
    pub temperature: f64,
    /// Share of micro-batches whose targets the student samples itself (online teacher only).
    pub on_policy_fraction: f64,
    /// Store the online teacher's weights 4-bit (NF4).
    pub quantize_teacher: bool,
    /// How on-policy completions are sampled.
    pub sampling: SamplingConfig,
}

impl Default for DistillSettings {
    fn default() -> Self {
        Self {
            ce_weight: 1.0,
            jsd_weight: 1.0,
            rkl_weight: 0.0,
            beta: 0.5,
            temperature: 1.0,
            on_policy_fraction: 0.0,
            quantize_teacher: false,
            sampling: SamplingConfig {
                max_new_tokens: 128,
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed: 0,
            },
        }
    }
}

impl DistillSettings {
    pub fn validate(&self) -> Result<(), TrainerError> {
        let bad = |what: String| Err(TrainerError::Config(format!("distill.{what}")));
        if !(0.0..=1.0).contains(&self.beta) {
            return bad(format!("beta = {}: must lie in [0, 1]", self.beta));
        }
        if !(0.0..=1.0).contains(&self.on_policy_fraction) {
            return bad(format!(
                "on_policy_fraction = {}: must lie in [0, 1]",
                self.on_policy_fraction
            ));
        }
        if self.temperature <= 0.0 {
            return bad(format!(
                "temperature = {}: must be positive",
                self.temperature
            ));
        }
        if [self.ce_weight, self.jsd_weight, self.rkl_weight]
            .iter()
            .any(|w| *w < 0.0)
        {
            return bad("*_weight: weights must not be negative".into());
        }
        Ok(())
    }
}

/// Read `path`, apply each `key=value` override (the value parsed as YAML: `0.5`, `true`,
/// `[a, b]`, or a plain string), and deserialise.
pub fn load<T: DeserializeOwned>(path: &Path, overrides: &[String]) -> Result<T, TrainerError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TrainerError::Io(path.display().to_string(), e))?;
    let mut root: Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| TrainerError::Config(format!("{}: {e}", path.display())))?;
    if root.is_null() {
        root = Value::Mapping(Mapping::new());
    }
    for assignment in overrides {
        let (key, raw) = assignment.split_once('=').ok_or_else(|| {
            TrainerError::Config(format!("--set {assignment}: expected key=value"))
        })?;
        let value: Value =
            serde_yaml_ng::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
        set_path(&mut root, key, value)
            .map_err(|e| TrainerError::Config(format!("--set {assignment}: {e}")))?;
    }
    serde_yaml_ng::from_value(root)
        .map_err(|e| TrainerError::Config(format!("{}: {e}", path.display())))
}

fn set_path(root: &mut Value, dotted: &str, value: Value) -> Result<(), String> {
    let mut node = root;
    let parts: Vec<&str> = dotted.split('.').collect();
    for (index, part) in parts.iter().enumerate() {
        let map = node
            .as_mapping_mut()
            .ok_or_else(|| format!("`{}` is not a section", parts[..index].join(".")))?;
        let key = Value::String(part.to_string());
        if index + 1 == parts.len() {
            map.insert(key, value);
            return Ok(());
        }
        node = map
            .entry(key)
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    Err("empty key".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        rank: usize,
        alpha: f64,
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Stage {
        base_model: String,
        max_steps: usize,
        lora: Inner,
    }

    #[test]
    fn overrides_nested_keys_and_rejects_unknown_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stage.yaml");
        std::fs::write(
            &path,
            "base_model: models/tiny\nmax_steps: 10\nlora:\n  rank: 8\n  alpha: 16\n",
        )
        .unwrap();
        let stage: Stage = load(&path, &["max_steps=25".into(), "lora.alpha=4.5".into()]).unwrap();
        assert_eq!(
            stage,
            Stage {
                base_model: "models/tiny".into(),
                max_steps: 25,
                lora: Inner {
                    rank: 8,
                    alpha: 4.5
                }
            }
        );
        let err = load::<Stage>(&path, &["lora.rnak=4".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("rnak"), "{err}");
        std::fs::write(
            &path,
            "base_model: m\nmax_stesp: 3\nlora: {rank: 1, alpha: 1}\n",
        )
        .unwrap();
        assert!(load::<Stage>(&path, &[])
            .unwrap_err()
            .to_string()
            .contains("max_stesp"));
        assert!(load::<Stage>(&path, &["nonsense".into()])
            .unwrap_err()
            .to_string()
            .contains("key=value"));
    }
}
