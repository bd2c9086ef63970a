//! A training-step probe on random weights, for `unitforge bench train`: a model of a named
//! shape (the real models' dimensions) drawn tensor by tensor straight into the model (never a
//! whole f32 copy), then a few timed SFT steps (masked NLL, backward, AdamW) split into forward,
//! backward and optimiser, or greedy generation at batch 1 and 8 (the median of three runs
//! each); FLOPs per step from the shape, peak resident memory from the kernel. The bench runs
//! each probe in a process of its own so that the peak is the probe's.

use std::time::Instant;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::model::config::ModelConfig;
use crate::model::decoder::{LoadOptions, Model};
use crate::model::generate::{generate_ids, SamplingConfig};
use crate::model::lora::{LoraConfig, Pass};
use crate::train::loss::masked_nll;
use crate::train::optim::{AdamW, AdamWConfig};
use crate::TrainerError;

/// Timed generation runs per batch size; the figure is their median.
const GENERATION_RUNS: usize = 3;

/// One measured configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    pub shape: String,
    /// `full` (f32), `lora` (f32 base), `lora-bf16` (bf16 base), `qlora` (NF4 base), `generate`
    /// (f32; `generate-lora`: with LoRA adapters, as GRPO's policy generates; `generate-bf16`,
    /// `generate-nf4`: from a bf16 or NF4 base);
    /// `-ckpt` after a training mode: with activation checkpointing (no LoRA dropout).
    pub mode: String,
    pub batch: usize,
    pub seq_len: usize,
    pub steps: usize,
    pub gen_tokens: usize,
    /// `cpu` or `cuda` (the first GPU; needs a `--features cuda` build).
    #[serde(default = "cpu")]
    pub device: String,
    /// The fused CPU ops (`fused.rs`) on, or their compositions (the reference column).
    #[serde(default = "fused_on")]
    pub fused: bool,
}

fn fused_on() -> bool {
    true
}

fn cpu() -> String {
    "cpu".into()
}

pub fn probe_device(name: &str) -> Result<Device, TrainerError> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(|e| {
            TrainerError::Config(format!(
                "no CUDA device ({e}): `--device cuda` needs a GPU and a build with `--features cuda`"
            ))
        }),
        other => Err(TrainerError::Config(format!(
            "unknown device `{other}` (cpu, cuda)"
        ))),
    }
}

/// What one probe measured (absent figures did not apply to its mode).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProbeFigures {
    pub shape: String,
    pub mode: String,
    /// `fused` or `composed` (see `Probe::fused`).
    pub ops: String,
    pub parameters: usize,
    pub step_s: Option<f64>,
    /// The step's parts: forward (with the loss), backward, optimiser.
    pub forward_s: Option<f64>,
    pub backward_s: Option<f64>,
    pub optimizer_s: Option<f64>,
    pub tokens_per_s: Option<f64>,
    pub gflop_per_step: Option<f64>,
    pub achieved_gflops: Option<f64>,
    pub decoder_linear_mb: f64,
    pub peak_rss_mb: f64,
    pub gen_tokens_per_s_b1: Option<f64>,
    pub gen_tokens_per_s_b8: Option<f64>,
    pub error: Option<String>,
}

/// A named model shape with the real models' dimensions: `tiny`, `smollm2`, `0.5b`.
pub fn shape(name: &str) -> Result<ModelConfig, TrainerError> {
    // (model type, hidden, intermediate, layers, heads, KV heads, vocabulary, RoPE base, q/k/v bias)
    let (kind, h, i, layers, heads, kv, vocab, rope, bias) = match name {
        "tiny" => ("qwen2", 128, 384, 4, 4, 2, 2048, 1e6, true),
        "0.5b" => ("qwen2", 896, 4864, 24, 14, 2, 151_936, 1e6, true),
        // SmolLM2-135M-Instruct's shape, the real model of configs/smollm2/.
        "smollm2" => ("llama", 576, 1536, 30, 9, 3, 49_152, 1e5, false),
        other => {
            return Err(TrainerError::Config(format!(
                "unknown shape `{other}` (tiny, 0.5b, smollm2)"
            )))
        }
    };
    Ok(serde_json::from_value(serde_json::json!({
        "model_type": kind,
        "vocab_size": vocab,
        "hidden_size": h,
        "intermediate_size": i,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "max_position_embeddings": 4096,
        "rope_theta": rope,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": true,
        "attention_bias": bias,
    }))
    .expect("the shapes are valid configs"))
}

/// Weights drawn on request, N(0, 0.02²) matrices, unit norms, zero biases: a model of any
/// size without a checkpoint or a full f32 copy in memory.
pub struct RandomWeights;

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if name.ends_with("norm.weight") {
            Tensor::ones(s, dtype, dev)
        } else if name.ends_with(".bias") {
            Tensor::zeros(s, dtype, dev)
        } else {
            Tensor::randn(0f32, 0.02, s, dev)?.to_dtype(dtype)
        }
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights have no unchecked {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// The tiny shape on random weights with LoRA (no dropout) whose B matrices are drawn too (LoRA
/// starts them at zero, and then A's gradient is zero as well): a model whose every adapter has a
/// gradient, for tests that compare two ways of computing one. `gradient_checkpointing` as in
/// `LoadOptions`.
#[cfg(test)]
pub(crate) fn tiny_lora_model(gradient_checkpointing: bool) -> crate::model::decoder::Model {
    use crate::model::decoder::{LoadOptions, Model};
    use crate::model::lora::LoraConfig;
    let device = Device::Cpu;
    let options = LoadOptions {
        lora: Some(LoraConfig {
            dropout: 0.0,
            ..LoraConfig::default()
        }),
        gradient_checkpointing,
        ..LoadOptions::default()
    };
    let weights =
        candle_nn::VarBuilder::from_backend(Box::new(RandomWeights), DType::F32, device.clone());
    let model = Model::from_weights(
        shape("tiny").expect("the tiny shape"),
        &weights,
        &device,
        &options,
        &candle_nn::VarMap::new(),
    )
    .expect("a tiny model");
    for (name, var) in model.trainable() {
        if name.contains("lora_B") {
            var.set(&Tensor::randn(0f32, 0.05, var.shape(), &device).expect("B"))
                .expect("B set");
        }
    }
    model
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// FLOPs of one training step: each token passes every decoder linear and the LM head
/// (2·N multiply-adds forward); backward costs 2·N again for input gradients and, when the base
/// trains (full fine-tuning), 2·N more for weight gradients. Attention scores add 4·t·h per
/// token and layer forward, doubled in backward. LoRA's own matrices are negligible.
fn step_flops(config: &ModelConfig, tokens: usize, seq_len: usize, full: bool) -> f64 {
    let h = config.hidden_size as f64;
    let kv = (config
        .num_key_value_heads
        .unwrap_or(config.num_attention_heads)
        * config.head_dim()) as f64;
    let per_layer = 2.0 * h * h + 2.0 * h * kv + 3.0 * h * config.intermediate_size as f64;
    let n = per_layer * config.num_hidden_layers as f64 + h * config.vocab_size as f64;
    let linear = 2.0 * n * tokens as f64 * if full { 3.0 } else { 2.0 };
    let attention =
        4.0 * seq_len as f64 * h * config.num_hidden_layers as f64 * tokens as f64 * 2.0;
    linear + attention
}

/// Build the probe's model on random weights, then time its steps or its generation.
pub fn run_probe(probe: &Probe) -> Result<ProbeFigures, TrainerError> {
    crate::kernels::fused::set_enabled(probe.fused);
    let config = shape(&probe.shape)?;
    let device = probe_device(&probe.device)?;
    // `-ckpt`: activation checkpointing (recompute.rs), which needs LoRA without dropout.
    let (base_mode, checkpointing) = match probe.mode.strip_suffix("-ckpt") {
        Some(base) => (base, true),
        None => (probe.mode.as_str(), false),
    };
    let adapters = LoraConfig {
        dropout: if checkpointing {
            0.0
        } else {
            LoraConfig::default().dropout
        },
        ..LoraConfig::default()
    };
    let (dtype, quantize, lora, full) = match base_mode {
        "full" => (DType::F32, false, None, true),
        "lora" => (DType::F32, false, Some(adapters), false),
        "lora-bf16" => (DType::BF16, false, Some(adapters), false),
        "qlora" => (DType::F32, true, Some(adapters), false),
        "generate" => (DType::F32, false, None, false),
        "generate-lora" => (DType::F32, false, Some(adapters), false),
        "generate-bf16" => (DType::BF16, false, None, false),
        "generate-nf4" => (DType::F32, true, None, false),
        other => return Err(TrainerError::Config(format!("unknown mode {other}"))),
    };
    let options = LoadOptions {
        dtype,
        lora: lora.clone(),
        quantize_base: quantize,
        full_finetune: full,
        seed: 0,
        gradient_checkpointing: checkpointing,
    };
    let weights = VarBuilder::from_backend(Box::new(RandomWeights), dtype, device.clone());
    let model = Model::from_weights(config.clone(), &weights, &device, &options, &VarMap::new())?;
    let mut figures = ProbeFigures {
        shape: probe.shape.clone(),
        mode: probe.mode.clone(),
        ops: ops_name(probe.fused).into(),
        decoder_linear_mb: model.decoder_linear_bytes() as f64 / 1e6,
        ..ProbeFigures::default()
    };
    let mut rng = unitforge_sandbox::rng::SplitMix64::new(1);
    let mut ids = |rows: usize, cols: usize| {
        let values: Vec<u32> = (0..rows * cols)
            .map(|_| rng.below(config.vocab_size) as u32)
            .collect();
        Tensor::from_vec(values, (rows, cols), &device)
    };
    if base_mode.starts_with("generate") {
        let prompt: Vec<u32> = ids(1, 16)?.flatten_all()?.to_vec1()?;
        let greedy = SamplingConfig {
            max_new_tokens: probe.gen_tokens,
            temperature: 0.0,
            ..SamplingConfig::default()
        };
        // An end token nothing emits, so every row generates the full count.
        let never = u32::MAX;
        for (n, slot) in [
            (1, &mut figures.gen_tokens_per_s_b1),
            (8, &mut figures.gen_tokens_per_s_b8),
        ] {
            generate_ids(
                &model,
                &prompt,
                n,
                never,
                &SamplingConfig {
                    max_new_tokens: 2,
                    ..greedy.clone()
                },
            )?;
            device.synchronize()?;
            // The median of a few runs: on a shared 2-core machine one run's figure moved by
            // a third within an hour, and `bench grpo` divides by it.
            let mut rates = Vec::with_capacity(GENERATION_RUNS);
            for _ in 0..GENERATION_RUNS {
                let started = Instant::now();
                let out = generate_ids(&model, &prompt, n, never, &greedy)?;
                let produced: usize = out.iter().map(Vec::len).sum();
                rates.push(produced as f64 / started.elapsed().as_secs_f64());
            }
            rates.sort_by(f64::total_cmp);
            *slot = Some(rates[GENERATION_RUNS / 2]);
        }
    } else {
        let params = model.trainable().to_vec();
        let mut optimizer = AdamW::new(params, AdamWConfig::default())?;
        let inputs = ids(probe.batch, probe.seq_len)?;
        let targets = ids(probe.batch, probe.seq_len)?;
        let mask = Tensor::ones((probe.batch, probe.seq_len), DType::F32, &device)?;
        let mut times = [0.0f64; 3];
        for step in 0..=probe.steps {
            let started = Instant::now();
            // As SFT computes it: log p(target) from the hidden states where the head is
            // frozen (the logits never whole), else from the logits.
            let logprobs = model.target_logprobs(&inputs, &targets, 1.0, Pass::Train)?;
            let loss = masked_nll(&logprobs, &mask)?;
            // A GPU runs asynchronously: wait for it before each reading of the clock.
            device.synchronize()?;
            let forward = started.elapsed().as_secs_f64();
            let grads = crate::model::recompute::backward(&loss)?;
            device.synchronize()?;
            let backward = started.elapsed().as_secs_f64();
            optimizer.step(&grads, 1e-4)?;
            device.synchronize()?;
            let total = started.elapsed().as_secs_f64();
            if step > 0 {
                for (slot, value) in
                    times
                        .iter_mut()
                        .zip([forward, backward - forward, total - backward])
                {
                    *slot += value / probe.steps.max(1) as f64;
                }
            }
        }
        let step_s: f64 = times.iter().sum();
        (figures.forward_s, figures.backward_s, figures.optimizer_s) =
            (Some(times[0]), Some(times[1]), Some(times[2]));
        let tokens = probe.batch * probe.seq_len;
        let flops = step_flops(&config, tokens, probe.seq_len, full);
        figures.step_s = Some(step_s);
        figures.tokens_per_s = Some(tokens as f64 / step_s);
        figures.gflop_per_step = Some(flops / 1e9);
        figures.achieved_gflops = Some(flops / step_s / 1e9);
    }
    figures.parameters = model
        .merged_weights()?
        .values()
        .map(|t| t.elem_count())
        .sum();
    figures.peak_rss_mb = peak_rss_mb();
    Ok(figures)
}

/// The device's f32 matmul rate with candle (GFLOP/s): the best of a few n³ products (1024 on
/// the CPU, 4096 on a GPU, where 1024³ is over before the clock notices).
pub fn matmul_peak_gflops(device: &Device) -> Result<f64, TrainerError> {
    let n = if device.is_cuda() { 4096 } else { 1024 };
    let a = Tensor::randn(0f32, 1.0, (n, n), device)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), device)?;
    a.matmul(&b)?;
    device.synchronize()?;
    let mut best = f64::INFINITY;
    for _ in 0..8 {
        let started = Instant::now();
        a.matmul(&b)?;
        device.synchronize()?;
        best = best.min(started.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n as f64).powi(3) / best / 1e9)
}

/// `fused` or `composed`: the column a probe's ops are reported under.
pub fn ops_name(fused: bool) -> &'static str {
    if fused {
        "fused"
    } else {
        "composed"
    }
}
