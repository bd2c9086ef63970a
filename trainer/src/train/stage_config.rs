//! Stage configs: the typed settings every stage reads (`StageConfig`, with each stage's own
//! section), loaded from a YAML file plus `--set key=value` overrides (dotted keys for nested
//! fields). An unknown key is an error that names it.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

use unitforge_sandbox::executor::ExecutorKind;
use unitforge_sandbox::rewards::RewardConfig;

use crate::model::generate::SamplingConfig;
use crate::model::lora::LoraConfig;
use crate::train::optim::AdamWConfig;
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
    /// Further training rows mixed into `train_data`'s (the repair's fix and diagnose rows,
    /// reward-filtered rows), each source with its weight: it adds weight × the number of
    /// `train_data` rows, drawn in a seeded order (repeating a source smaller than its share).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub train_mix: Vec<MixSource>,
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
    /// Recompute each decoder layer's activations in the backward instead of keeping them
    /// (`recompute.rs`): less memory for one more forward per step. CPU, no LoRA dropout.
    #[serde(default)]
    pub gradient_checkpointing: bool,
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
    /// Group sampling, policy loss and evaluation of `train grpo`.
    #[serde(default)]
    pub grpo: GrpoSettings,
    /// Where and how `train grpo` scores its completions.
    #[serde(default)]
    pub reward: RewardSettings,
}

/// One source of `train_mix`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MixSource {
    pub data: PathBuf,
    pub weight: f64,
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

/// How the per-token policy loss is normalised (TRL's `loss_type`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Mean over each completion's tokens, then mean over completions (length-biased).
    Grpo,
    /// Token sum over the micro-batch's completion tokens.
    Bnpo,
    /// Token sum over `max_completion_length` × completions: a constant, no length bias.
    DrGrpo,
    /// Token sum over every completion token of the step (all micro-batches).
    Dapo,
}

/// What advantages are divided by (TRL's `scale_rewards`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RewardScaling {
    /// A = r − mean(group): the original design.
    None,
    /// A = (r − mean(group)) / (std(group) + ε).
    Group,
    /// A = (r − mean(group)) / (std(batch) + ε).
    Batch,
}

/// Where the importance ratio lives (TRL's `importance_sampling_level`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ImportanceLevel {
    /// One ratio per token.
    Token,
    /// GSPO: one length-normalised ratio per completion.
    Sequence,
}

/// Online distillation inside GRPO: the generalised JSD between the student and the teacher on
/// the sampled completions, added with `weight`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GkdOnline {
    pub weight: f64,
    /// JSD interpolation: 0 = forward KL(T‖S), 0.5 = symmetric, 1 = reverse KL(S‖T).
    pub beta: f64,
    pub temperature: f64,
}

impl Default for GkdOnline {
    fn default() -> Self {
        Self {
            weight: 0.0,
            beta: 0.5,
            temperature: 1.0,
        }
    }
}

/// The `grpo:` section of a stage config. Field names follow TRL's GRPOConfig where the meaning
/// is the same.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoSettings {
    /// Prompts per optimiser step; each is one group (`batch_size` groups per forward).
    pub prompts_per_step: usize,
    /// G: completions sampled per prompt.
    pub num_generations: usize,
    pub max_completion_length: usize,
    pub temperature: f64,
    pub top_k: usize,
    pub top_p: f64,
    /// μ: optimisation steps on each generated batch (the ratio leaves 1 from the second on).
    pub num_iterations: usize,
    /// Lower clip of the ratio: 1 − epsilon.
    pub epsilon: f64,
    /// Upper clip of the ratio: 1 + epsilon_high (default: epsilon).
    pub epsilon_high: Option<f64>,
    /// KL coefficient to the reference policy; 0 skips the reference forward.
    pub beta: f64,
    pub loss_type: LossType,
    pub scale_rewards: RewardScaling,
    /// Leave completions that hit `max_completion_length` out of the loss.
    pub mask_truncated_completions: bool,
    pub importance_sampling_level: ImportanceLevel,
    /// Online distillation from `teacher_model` on the sampled completions.
    pub gkd_online: GkdOnline,
    /// Held-out prompts scored at each evaluation.
    pub eval_prompts: usize,
    /// Completions per held-out prompt at evaluation: 0 = one greedy completion.
    pub eval_samples: usize,
    /// Write every sampled completion to `completions.jsonl`.
    pub log_completions: bool,
    /// DAPO's dynamic sampling: groups whose rewards are all equal (no signal) are replaced by
    /// groups of further prompts, up to `max_resample_rounds` extra generation rounds a step,
    /// and those still without signal are left out of the loss.
    pub dynamic_sampling: bool,
    pub max_resample_rounds: usize,
    /// Draw each step's prompts by each training row's running success (rows the policy
    /// always fails or always passes drawn less) instead of the loop's shuffled order.
    pub curriculum: bool,
    /// λ of per-test credit (`failing_tests: prune` only): each token of a test function gets
    /// λ · (its share of kept cases − the group's mean share) on top of its completion's
    /// advantage. 0 turns it off (`stages/grpo/test_credit.rs`, docs/grpo.md).
    pub test_credit: f64,
    /// Steps in a row whose every completion the infrastructure failed to score before the
    /// stage waits for the reward backend.
    pub max_blind_steps: usize,
    /// How long it then waits (re-scoring with back-off) before it stops with an error and a
    /// checkpoint.
    pub backend_wait_s: f64,
}

impl Default for GrpoSettings {
    fn default() -> Self {
        Self {
            prompts_per_step: 4,
            num_generations: 4,
            max_completion_length: 256,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            num_iterations: 1,
            epsilon: 0.2,
            epsilon_high: None,
            beta: 0.0,
            loss_type: LossType::Dapo,
            scale_rewards: RewardScaling::None,
            mask_truncated_completions: false,
            importance_sampling_level: ImportanceLevel::Token,
            gkd_online: GkdOnline::default(),
            eval_prompts: 16,
            eval_samples: 0,
            log_completions: true,
            dynamic_sampling: false,
            max_resample_rounds: 2,
            curriculum: false,
            test_credit: 0.0,
            max_blind_steps: 3,
            backend_wait_s: 300.0,
        }
    }
}

impl GrpoSettings {
    pub fn epsilon_high(&self) -> f64 {
        self.epsilon_high.unwrap_or(self.epsilon)
    }

    pub fn validate(&self) -> Result<(), TrainerError> {
        let bad = |what: String| Err(TrainerError::Config(format!("grpo.{what}")));
        if self.num_generations < 2 {
            return bad(format!(
                "num_generations = {}: a group needs at least 2 completions to compare",
                self.num_generations
            ));
        }
        if self.prompts_per_step == 0 || self.max_completion_length == 0 {
            return bad("prompts_per_step and max_completion_length must be positive".into());
        }
        if !(self.test_credit >= 0.0 && self.test_credit.is_finite()) {
            return bad(format!(
                "test_credit = {}: must be a finite weight ≥ 0 (0 turns it off)",
                self.test_credit
            ));
        }
        if self.num_iterations == 0 {
            return bad("num_iterations must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.epsilon) || self.epsilon_high() < 0.0 {
            return bad(format!(
                "epsilon = {} / epsilon_high = {}: the clip range must be 1 − epsilon > 0 and epsilon_high ≥ 0",
                self.epsilon,
                self.epsilon_high()
            ));
        }
        if self.beta < 0.0 || self.gkd_online.weight < 0.0 {
            return bad("beta and gkd_online.weight must not be negative".into());
        }
        if !(0.0..=1.0).contains(&self.gkd_online.beta) || self.gkd_online.temperature <= 0.0 {
            return bad("gkd_online: beta must lie in [0, 1] and temperature be positive".into());
        }
        if self.max_blind_steps == 0 || self.backend_wait_s.is_nan() || self.backend_wait_s < 0.0 {
            return bad(
                "max_blind_steps must be at least 1 and backend_wait_s not negative".into(),
            );
        }
        if self.temperature < 0.0 || !(0.0..=1.0).contains(&self.top_p) || self.top_p == 0.0 {
            return bad("temperature must be ≥ 0 and top_p in (0, 1]".into());
        }
        Ok(())
    }
}

/// The `reward:` section of a stage config: where completions are scored (`executor`,
/// `server`, `workers`, `concurrency`), and every other key a reward config
/// (`configs/rewards.yaml`: `weights`, `mutants`, `timeouts`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct RewardSettings {
    /// `docker` (the default), `remote` (`unitforge runner` hosts at `runners`) or `local`
    /// (host processes, development only).
    pub executor: ExecutorKind,
    /// Remote executor: the runner hosts, `host:port` each.
    pub runners: Vec<String>,
    /// A running reward service (`http://host:port`) instead of an in-process pool.
    pub server: Option<String>,
    /// Sandbox workers of the in-process pool (default: number of CPUs).
    pub workers: Option<usize>,
    /// Completions scored at the same time.
    pub concurrency: usize,
    /// How each completion is scored; part of the cache key.
    pub scoring: RewardConfig,
}

impl Default for RewardSettings {
    fn default() -> Self {
        Self {
            executor: ExecutorKind::Docker,
            runners: Vec::new(),
            server: None,
            workers: None,
            concurrency: 4,
            scoring: RewardConfig::default(),
        }
    }
}

/// The keys of `reward:` that are not the reward config's.
#[derive(Deserialize)]
struct RewardPlace {
    #[serde(default)]
    executor: ExecutorKind,
    #[serde(default)]
    runners: Vec<String>,
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    workers: Option<usize>,
    #[serde(default)]
    concurrency: Option<usize>,
    #[serde(flatten)]
    scoring: Mapping,
}

impl<'de> Deserialize<'de> for RewardSettings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let place = RewardPlace::deserialize(deserializer)?;
        // The rest is a reward config: its own unknown keys are errors that name them.
        let scoring = RewardConfig::deserialize(Value::Mapping(place.scoring))
            .map_err(|e| serde::de::Error::custom(format!("reward: {e}")))?;
        Ok(Self {
            executor: place.executor,
            runners: place.runners,
            server: place.server,
            workers: place.workers,
            concurrency: place
                .concurrency
                .unwrap_or(RewardSettings::default().concurrency),
            scoring,
        })
    }
}

impl Serialize for RewardSettings {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = match serde_yaml_ng::to_value(&self.scoring) {
            Ok(Value::Mapping(map)) => map,
            _ => Mapping::new(),
        };
        let mut put = |key: &str, value: Value| {
            map.insert(Value::String(key.into()), value);
        };
        put(
            "executor",
            serde_yaml_ng::to_value(self.executor).map_err(serde::ser::Error::custom)?,
        );
        if !self.runners.is_empty() {
            put(
                "runners",
                Value::Sequence(self.runners.iter().cloned().map(Value::String).collect()),
            );
        }
        if let Some(server) = &self.server {
            put("server", Value::String(server.clone()));
        }
        if let Some(workers) = self.workers {
            put("workers", Value::Number(workers.into()));
        }
        put("concurrency", Value::Number(self.concurrency.into()));
        map.serialize(serializer)
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

    #[test]
    fn every_shipped_stage_config_loads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut found = 0;
        for dir in [root.clone(), root.join("smollm2")] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if !name.ends_with(".yaml") || name.starts_with("model_") || name == "rewards.yaml"
                {
                    continue;
                }
                let config: StageConfig =
                    load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                config.grpo.validate().unwrap();
                config.distill.validate().unwrap();
                found += 1;
            }
        }
        assert!(found >= 8, "{found} stage configs");
    }
}
