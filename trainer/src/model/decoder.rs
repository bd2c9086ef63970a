//! The decoder (Qwen2 / Llama family), written for training.
//!
//! A plain loop over layers (`blocks.rs` holds the layer's parts). Every linear layer is a
//! `lora::Linear`: a frozen, 4-bit or trainable base plus an optional LoRA pair.
//! Weights are read from a Hugging Face checkpoint as it is: `config.json` and `model.safetensors`
//! or shards listed in `model.safetensors.index.json`, in f32, bf16 or f16.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Result, Tensor, Var};

pub use crate::model::blocks::{padding_mask, softmax_last_dim};
use candle_nn::{VarBuilder, VarMap};

use crate::kernels::quant::Nf4Tensor;
use crate::model::blocks::{rms_norm, Attention, Layer, LayerCache, Mlp, Rope};
use crate::model::config::ModelConfig;
use crate::model::lora::{BaseWeight, Linear, LoraConfig, Pass};
use crate::model::recompute;
use crate::TrainerError;

/// How to hold the weights of a loaded model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Compute dtype (weights are converted to it).
    pub dtype: DType,
    /// LoRA adapters on the target modules, if any.
    pub lora: Option<LoraConfig>,
    /// Store the frozen linear weights in 4-bit NF4 (QLoRA).
    pub quantize_base: bool,
    /// Train every weight (no LoRA needed).
    pub full_finetune: bool,
    /// Seed of the LoRA initialisation.
    pub seed: u64,
    /// Recompute each decoder layer's activations in the backward instead of keeping them
    /// (`recompute.rs`): less memory, one more forward per step. CPU only, no LoRA dropout.
    pub gradient_checkpointing: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            lora: None,
            quantize_base: false,
            full_finetune: false,
            seed: 0,
            gradient_checkpointing: false,
        }
    }
}

/// Keys and values of past positions, per layer, for generation.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        Self {
            layers: (0..layers).map(|_| None).collect(),
        }
    }

    /// Positions already cached.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, LayerCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keep the batch rows `rows` names, in its order (a row may be named several times: the
    /// rows that share a prompt's keys and values get copies of them).
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        for layer in self.layers.iter_mut().flatten() {
            layer.select_rows(rows)?;
        }
        Ok(())
    }
}

/// A decoder-only language model ready for training or generation.
pub struct Model {
    config: ModelConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    rope: Rope,
    trainable: Vec<(String, Var)>,
    device: Device,
    dtype: DType,
    /// Training forwards recompute each layer in the backward (`recompute.rs`).
    gradient_checkpointing: bool,
}

/// The safetensors files of a checkpoint directory (one file, or the shards of its index).
pub fn checkpoint_files(dir: &Path) -> std::result::Result<Vec<PathBuf>, TrainerError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index_path = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index_path).map_err(|_| {
        TrainerError::Config(format!(
            "{} has neither model.safetensors nor model.safetensors.index.json",
            dir.display()
        ))
    })?;
    let index: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| TrainerError::Config(format!("{}: {e}", index_path.display())))?;
    let mut files: Vec<PathBuf> = index["weight_map"]
        .as_object()
        .ok_or_else(|| TrainerError::Config(format!("{}: no weight_map", index_path.display())))?
        .values()
        .filter_map(|v| v.as_str())
        .map(|name| dir.join(name))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

impl Model {
    /// Load `dir` (a Hugging Face checkpoint). LoRA variables (and, for full fine-tuning, every
    /// weight) are created in `varmap`, under their PEFT / Hugging Face names.
    pub fn load(
        dir: &Path,
        device: &Device,
        options: &LoadOptions,
        varmap: &VarMap,
    ) -> std::result::Result<Self, TrainerError> {
        let config = ModelConfig::from_json_file(&dir.join("config.json"))?;
        let files = checkpoint_files(dir)?;
        // SAFETY: the files are memory-mapped read-only; they must not change while loaded.
        let weights =
            unsafe { VarBuilder::from_mmaped_safetensors(&files, options.dtype, device)? };
        Ok(Self::from_weights(
            config, &weights, device, options, varmap,
        )?)
    }

    /// Load for inference: `dir`'s weights, plus the PEFT adapter in `adapter` if given
    /// (`adapter_config.json` and `adapter_model.safetensors`, as `train sft` or Python PEFT
    /// write them).
    pub fn load_for_inference(
        dir: &Path,
        adapter: Option<&Path>,
        device: &Device,
    ) -> std::result::Result<Self, TrainerError> {
        let Some(adapter) = adapter else {
            return Self::load(dir, device, &LoadOptions::default(), &VarMap::new());
        };
        let config_path = adapter.join("adapter_config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| TrainerError::Io(config_path.display().to_string(), e))?;
        let peft: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| TrainerError::Config(format!("{}: {e}", config_path.display())))?;
        let lora = LoraConfig {
            rank: peft["r"]
                .as_u64()
                .ok_or_else(|| TrainerError::Config(format!("{}: no `r`", config_path.display())))?
                as usize,
            alpha: peft["lora_alpha"].as_f64().unwrap_or(16.0),
            dropout: 0.0,
            target_modules: peft["target_modules"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let model = Self::load(
            dir,
            device,
            &LoadOptions {
                lora: Some(lora),
                ..LoadOptions::default()
            },
            &VarMap::new(),
        )?;
        let weights =
            candle_core::safetensors::load(adapter.join("adapter_model.safetensors"), device)?;
        for (name, var) in model.trainable() {
            let value = weights
                .get(name)
                .ok_or_else(|| TrainerError::Config(format!("the adapter lacks {name}")))?;
            var.set(&value.to_dtype(var.dtype())?)?;
        }
        Ok(model)
    }

    /// Build from any VarBuilder holding Hugging Face weight names.
    pub fn from_weights(
        config: ModelConfig,
        weights: &VarBuilder,
        device: &Device,
        options: &LoadOptions,
        varmap: &VarMap,
    ) -> Result<Self> {
        if options.gradient_checkpointing {
            if !device.is_cpu() {
                candle_core::bail!(
                    "gradient_checkpointing runs on the CPU only (its recomputed layer is a CPU op)"
                );
            }
            if let Some(dropout) = options
                .lora
                .as_ref()
                .map(|l| l.dropout)
                .filter(|&d| d > 0.0)
            {
                candle_core::bail!(
                    "gradient_checkpointing needs lora.dropout: 0 (it is {dropout}): the layer recomputed in the backward would draw another dropout mask than its forward"
                );
            }
        }
        let dtype = options.dtype;
        let trainable_vb = VarBuilder::from_varmap(varmap, dtype, device);
        let mut trainable = Vec::new();
        let full = options.full_finetune;
        let mut param = |name: &str, tensor: Tensor| -> Result<Tensor> {
            trainable_if(full, varmap, &mut trainable, name, tensor)
        };
        let h = config.hidden_size;
        let head_dim = config.head_dim();
        let linear = |name: &str,
                      out_dim: usize,
                      in_dim: usize,
                      bias: bool,
                      adapted: bool,
                      trainable: &mut Vec<(String, Var)>|
         -> Result<Linear> {
            let weight = weights.get((out_dim, in_dim), &format!("{name}.weight"))?;
            let bias = if bias {
                let bias_name = format!("{name}.bias");
                let tensor = weights.get(out_dim, &bias_name)?;
                Some(trainable_if(full, varmap, trainable, &bias_name, tensor)?)
            } else {
                None
            };
            let base = if options.full_finetune {
                let weight_name = format!("{name}.weight");
                BaseWeight::Trainable(register(varmap, trainable, &weight_name, &weight)?)
            } else if options.quantize_base && adapted {
                BaseWeight::Quantized(std::sync::Arc::new(Nf4Tensor::quantize(&weight)?))
            } else {
                BaseWeight::Frozen(weight)
            };
            let mut layer = Linear::new(base, bias);
            if let Some(lora) = &options.lora {
                let module = name.rsplit('.').next().unwrap_or(name);
                if adapted && lora.target_modules.iter().any(|t| t == module) {
                    layer = layer.with_lora(lora, &trainable_vb, name, options.seed)?;
                }
            }
            Ok(layer)
        };
        let embed = param(
            "model.embed_tokens.weight",
            weights.get((config.vocab_size, h), "model.embed_tokens.weight")?,
        )?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        let qkv_bias = config.qkv_bias();
        let mut linear_vars = Vec::new();
        for index in 0..config.num_hidden_layers {
            let p = format!("model.layers.{index}");
            let attention = Attention {
                q: linear(
                    &format!("{p}.self_attn.q_proj"),
                    config.num_attention_heads * head_dim,
                    h,
                    qkv_bias,
                    true,
                    &mut linear_vars,
                )?,
                k: linear(
                    &format!("{p}.self_attn.k_proj"),
                    config.kv_heads() * head_dim,
                    h,
                    qkv_bias,
                    true,
                    &mut linear_vars,
                )?,
                v: linear(
                    &format!("{p}.self_attn.v_proj"),
                    config.kv_heads() * head_dim,
                    h,
                    qkv_bias,
                    true,
                    &mut linear_vars,
                )?,
                o: linear(
                    &format!("{p}.self_attn.o_proj"),
                    h,
                    config.num_attention_heads * head_dim,
                    false,
                    true,
                    &mut linear_vars,
                )?,
                heads: config.num_attention_heads,
                kv_heads: config.kv_heads(),
                head_dim,
            };
            let mlp = Mlp {
                gate: linear(
                    &format!("{p}.mlp.gate_proj"),
                    config.intermediate_size,
                    h,
                    false,
                    true,
                    &mut linear_vars,
                )?,
                up: linear(
                    &format!("{p}.mlp.up_proj"),
                    config.intermediate_size,
                    h,
                    false,
                    true,
                    &mut linear_vars,
                )?,
                down: linear(
                    &format!("{p}.mlp.down_proj"),
                    h,
                    config.intermediate_size,
                    false,
                    true,
                    &mut linear_vars,
                )?,
            };
            let input_norm = param(
                &format!("{p}.input_layernorm.weight"),
                weights.get(h, &format!("{p}.input_layernorm.weight"))?,
            )?;
            let post_attention_norm = param(
                &format!("{p}.post_attention_layernorm.weight"),
                weights.get(h, &format!("{p}.post_attention_layernorm.weight"))?,
            )?;
            layers.push(Layer {
                attention,
                mlp,
                input_norm,
                post_attention_norm,
            });
        }
        let norm = param("model.norm.weight", weights.get(h, "model.norm.weight")?)?;
        let lm_head = if config.tie_word_embeddings {
            Linear::new(BaseWeight::Frozen(embed.clone()), None)
        } else {
            linear(
                "lm_head",
                config.vocab_size,
                h,
                false,
                false,
                &mut linear_vars,
            )?
        };
        trainable.extend(linear_vars);
        let rope = Rope::new(&config, dtype, device)?;
        let mut model = Self {
            config,
            embed,
            layers,
            norm,
            lm_head,
            rope,
            trainable,
            device: device.clone(),
            dtype,
            gradient_checkpointing: options.gradient_checkpointing,
        };
        model.collect_lora_vars();
        Ok(model)
    }

    fn collect_lora_vars(&mut self) {
        let mut named = Vec::new();
        for (index, layer) in self.layers.iter().enumerate() {
            for (path, linear) in layer.linears() {
                if let Some((a, b)) = linear.lora_vars() {
                    let prefix = format!("base_model.model.model.layers.{index}.{path}");
                    named.push((format!("{prefix}.lora_A.weight"), a.clone()));
                    named.push((format!("{prefix}.lora_B.weight"), b.clone()));
                }
            }
        }
        self.trainable.extend(named);
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Every trainable variable with its checkpoint name.
    /// Bytes held by the decoder layers' linear weights: the part QLoRA stores in 4 bits.
    pub fn decoder_linear_bytes(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|layer| layer.linears())
            .map(|(_, linear)| linear.base_bytes())
            .sum()
    }

    pub fn trainable(&self) -> &[(String, Var)] {
        &self.trainable
    }

    /// Every weight under its Hugging Face name, LoRA updates merged in and 4-bit bases
    /// dequantised: a plain checkpoint that needs no adapter.
    pub fn merged_weights(&self) -> Result<std::collections::HashMap<String, Tensor>> {
        let mut weights = std::collections::HashMap::new();
        let like = &self.embed;
        weights.insert("model.embed_tokens.weight".to_string(), self.embed.detach());
        for (index, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{index}");
            for (path, linear) in layer.linears() {
                weights.insert(
                    format!("{p}.{path}.weight"),
                    linear.merged_weight(like)?.detach(),
                );
                if let Some(bias) = linear.bias() {
                    weights.insert(format!("{p}.{path}.bias"), bias.detach());
                }
            }
            weights.insert(
                format!("{p}.input_layernorm.weight"),
                layer.input_norm.detach(),
            );
            weights.insert(
                format!("{p}.post_attention_layernorm.weight"),
                layer.post_attention_norm.detach(),
            );
        }
        weights.insert("model.norm.weight".to_string(), self.norm.detach());
        if !self.config.tie_word_embeddings {
            weights.insert(
                "lm_head.weight".to_string(),
                self.lm_head.merged_weight(like)?.detach(),
            );
        }
        Ok(weights)
    }

    /// The LoRA variables under their PEFT names (empty without adapters).
    pub fn adapter_weights(&self) -> std::collections::HashMap<String, Tensor> {
        self.trainable
            .iter()
            .filter(|(name, _)| name.contains(".lora_"))
            .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
            .collect()
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.layers.len())
    }

    /// Logits [batch, time, vocab] (f32 for half-precision models, else the model's dtype) for
    /// `input_ids` [batch, time] at positions
    /// `offset..offset + time`. With a cache, keys and values are appended to it.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        offset: usize,
        cache: Option<&mut KvCache>,
        train: bool,
    ) -> Result<Tensor> {
        self.forward_masked(input_ids, offset, cache, None, train)
    }

    /// `forward` for left-padded rows: `key_mask` [batch, 1, 1, keys] is added to the attention
    /// scores (`padding_mask` makes it), so no query attends to a padding key. RoPE needs no
    /// per-row positions: attention scores depend only on the distance between positions, which
    /// left padding does not change.
    pub fn forward_masked(
        &self,
        input_ids: &Tensor,
        offset: usize,
        cache: Option<&mut KvCache>,
        key_mask: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let pass = if train { Pass::Train } else { Pass::Eval };
        self.forward_pass(input_ids, offset, cache, key_mask, pass)
    }

    /// `forward_masked` in evaluation, but the head's logits of the last position only [batch,
    /// vocabulary]: what generation needs from a prompt, without the head's product over every
    /// prompt position.
    pub fn last_logits(
        &self,
        input_ids: &Tensor,
        offset: usize,
        cache: Option<&mut KvCache>,
        key_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, offset, cache, key_mask, Pass::Eval)?;
        let time = hidden.dim(1)?;
        let last = hidden.narrow(1, time - 1, 1)?.squeeze(1)?;
        self.head_logits(&last, Pass::Eval)
    }

    /// The logits of the model as it was loaded, before its adapters: LoRA switched off. This is
    /// GRPO's reference policy; without adapters it equals `forward`.
    pub fn forward_without_adapters(
        &self,
        input_ids: &Tensor,
        key_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_pass(input_ids, 0, None, key_mask, Pass::BaseOnly)
    }

    /// The model as generation sees it when it carries LoRA adapters: each dense base with its
    /// adapter merged in (`Linear::merged_for_generation`), nothing trainable, so that a
    /// decoding step makes one product per layer where the adapters would add two small ones
    /// and their sum (each a graph op of its own). `None` without adapters: the model itself
    /// serves. The same function up to float rounding (the merged product sums in another
    /// order).
    pub fn merged_for_generation(&self) -> Result<Option<Model>> {
        let dense_bases = self
            .layers
            .iter()
            .flat_map(|layer| layer.linears())
            .all(|(_, linear)| matches!(linear.base(), BaseWeight::Frozen(_)));
        if !self.has_adapters() || !dense_bases {
            // Without adapters there is nothing to merge; a 4-bit (QLoRA) base stays 4-bit.
            return Ok(None);
        }
        let layers = self
            .layers
            .iter()
            .map(|layer| {
                let mut merged = layer.clone();
                for linear in merged.linears_mut() {
                    *linear = linear.merged_for_generation()?;
                }
                Ok(merged)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Model {
            config: self.config.clone(),
            embed: self.embed.detach(),
            layers,
            norm: self.norm.detach(),
            lm_head: self.lm_head.merged_for_generation()?,
            rope: self.rope.clone(),
            trainable: Vec::new(),
            device: self.device.clone(),
            dtype: self.dtype,
            gradient_checkpointing: false,
        }))
    }

    /// Whether any linear layer carries a LoRA pair.
    pub fn has_adapters(&self) -> bool {
        self.trainable
            .iter()
            .any(|(name, _)| name.contains(".lora_"))
    }

    fn forward_pass(
        &self,
        input_ids: &Tensor,
        offset: usize,
        cache: Option<&mut KvCache>,
        key_mask: Option<&Tensor>,
        pass: Pass,
    ) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, offset, cache, key_mask, pass)?;
        self.head_logits(&hidden, pass)
    }

    /// The output head's logits for `hidden`, in f32 for half-precision models.
    fn head_logits(&self, hidden: &Tensor, pass: Pass) -> Result<Tensor> {
        let logits = self.lm_head.forward_pass(hidden, pass)?;
        match self.dtype {
            DType::BF16 | DType::F16 => logits.to_dtype(DType::F32),
            _ => Ok(logits),
        }
    }

    /// log p(targets) [batch, time] of the whole sequence `input_ids` [batch, time] under
    /// logits / `temperature`, in `pass` (`Pass::BaseOnly`: GRPO's reference): what
    /// cross-entropy and GRPO need. With a frozen output head where the fused ops serve, from
    /// the hidden states in chunks (`fused_head_logprobs.rs`: the logits never whole); else from
    /// the logits, with the same numbers.
    pub fn target_logprobs(
        &self,
        input_ids: &Tensor,
        targets: &Tensor,
        temperature: f64,
        pass: Pass,
    ) -> Result<Tensor> {
        self.target_logprobs_from(input_ids, targets, 0, temperature, pass)
    }

    /// [`Self::target_logprobs`] where only positions `from..` count: the output head (a product
    /// over the whole vocabulary, a fifth of a small model's work per position) runs on those
    /// alone, and the positions before `from` read 0. GRPO's rows count only their completion,
    /// which starts after a prompt of hundreds of tokens.
    pub fn target_logprobs_from(
        &self,
        input_ids: &Tensor,
        targets: &Tensor,
        from: usize,
        temperature: f64,
        pass: Pass,
    ) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, 0, None, None, pass)?;
        let time = hidden.dim(1)?;
        let from = from.min(time.saturating_sub(1));
        if from == 0 {
            return self.head_target_logprobs(&hidden, targets, temperature, pass);
        }
        let logp = self.head_target_logprobs(
            &hidden.narrow(1, from, time - from)?.contiguous()?,
            &targets.narrow(1, from, time - from)?.contiguous()?,
            temperature,
            pass,
        )?;
        logp.pad_with_zeros(1, from, 0)
    }

    /// log p(targets) [rows, time] of rows that all continue one prefix: `prefix` [1, length]
    /// at positions 0..length, then each row's `input_ids` [rows, time] at positions
    /// `length..length + time`, `targets` the tokens those positions predict. The prefix goes
    /// through the layers once and its keys and values serve every row (GRPO's group shares its
    /// prompt: its samples' log-probs for a fraction of the rows' work), the gradient reaching it
    /// through them; equal to [`Self::target_logprobs`] over the whole rows at their last `time`
    /// positions. Where a training forward recomputes its layers in the backward, the rows are
    /// run whole.
    pub fn shared_prefix_target_logprobs(
        &self,
        prefix: &Tensor,
        input_ids: &Tensor,
        targets: &Tensor,
        temperature: f64,
        pass: Pass,
    ) -> Result<Tensor> {
        let (rows, time) = input_ids.dims2()?;
        let length = prefix.dim(1)?;
        if length == 0 || (self.gradient_checkpointing && pass == Pass::Train) {
            // The prefix's own targets are never read (`from` = length): any tokens serve.
            let prefixes = prefix.repeat((rows, 1))?;
            let whole = Tensor::cat(&[&prefixes, input_ids], 1)?;
            let targets = Tensor::cat(&[&prefixes, targets], 1)?;
            return self
                .target_logprobs_from(&whole, &targets, length, temperature, pass)?
                .narrow(1, length, time);
        }
        let (mut shared, mut x) = (self.embedded(prefix)?, self.embedded(input_ids)?);
        let eps = self.config.rms_norm_eps;
        let last = self.layers.len().saturating_sub(1);
        for (index, layer) in self.layers.iter().enumerate() {
            let (next, keys_values) =
                layer.prefix_forward(&shared, &self.rope, eps, index < last, pass)?;
            x = layer.forward_after_prefix(&x, &self.rope, eps, &keys_values, pass)?;
            if let Some(next) = next {
                shared = next;
            }
        }
        let hidden = rms_norm(&x, &self.norm, eps)?;
        self.head_target_logprobs(&hidden, targets, temperature, pass)
    }

    /// log p(targets) from the final hidden states [batch, time, hidden].
    fn head_target_logprobs(
        &self,
        hidden: &Tensor,
        targets: &Tensor,
        temperature: f64,
        pass: Pass,
    ) -> Result<Tensor> {
        match self.lm_head.plain_frozen_weight() {
            Some(weight)
                if crate::kernels::fused::applies(hidden) && weight.dtype() == DType::F32 =>
            {
                let (batch, time, width) = hidden.dims3()?;
                crate::kernels::fused_head_logprobs::fused_head_logprobs(
                    &hidden.reshape((batch * time, width))?,
                    weight,
                    &targets.flatten_all()?,
                    temperature,
                )?
                .reshape((batch, time))
            }
            _ => crate::model::logprobs::chosen_logprobs(
                &self.head_logits(hidden, pass)?,
                targets,
                temperature,
            ),
        }
    }

    /// The token embeddings [batch, time, hidden] of `input_ids` [batch, time].
    fn embedded(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (batch, time) = input_ids.dims2()?;
        self.embed
            .index_select(&input_ids.flatten_all()?, 0)?
            .reshape((batch, time, self.config.hidden_size))
    }

    /// The final layer norm's output [batch, time, hidden]: what the output head multiplies.
    fn hidden_states(
        &self,
        input_ids: &Tensor,
        offset: usize,
        mut cache: Option<&mut KvCache>,
        key_mask: Option<&Tensor>,
        pass: Pass,
    ) -> Result<Tensor> {
        let mut x = self.embedded(input_ids)?;
        let eps = self.config.rms_norm_eps;
        for (index, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[index]);
            x = if self.gradient_checkpointing && pass == Pass::Train && slot.is_none() {
                recompute::layer(layer, &x, &self.rope, eps, offset, key_mask)?
            } else {
                layer.forward(&x, &self.rope, eps, offset, slot, key_mask, pass)?
            };
        }
        rms_norm(&x, &self.norm, eps)
    }
}

/// `tensor` as a variable of `varmap` under `name`, listed among the trainable (full
/// fine-tuning: every weight, bias and norm of the checkpoint).
fn register(
    varmap: &VarMap,
    trainable: &mut Vec<(String, Var)>,
    name: &str,
    tensor: &Tensor,
) -> Result<Var> {
    let var = Var::from_tensor(tensor)?;
    varmap
        .data()
        .lock()
        .expect("varmap lock")
        .insert(name.to_string(), var.clone());
    trainable.push((name.to_string(), var.clone()));
    Ok(var)
}

/// In full fine-tuning `tensor` registered as a variable (`register`), its tensor returned;
/// otherwise `tensor` as it is, frozen.
fn trainable_if(
    full_finetune: bool,
    varmap: &VarMap,
    trainable: &mut Vec<(String, Var)>,
    name: &str,
    tensor: Tensor,
) -> Result<Tensor> {
    if !full_finetune {
        return Ok(tensor);
    }
    Ok(register(varmap, trainable, name, &tensor)?
        .as_tensor()
        .clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generation with trainable adapters: the KV cache holds values, not the autograd graph
    /// of every decoding step (which kept all their intermediates alive to the end: a GRPO
    /// group of SmolLM2 grew past 9 GB before its training step began).
    #[test]
    fn the_kv_cache_carries_no_autograd_graph() {
        let config: ModelConfig = serde_json::from_value(serde_json::json!({
            "vocab_size": 40, "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "max_position_embeddings": 32, "rms_norm_eps": 1e-6
        }))
        .unwrap();
        let device = Device::Cpu;
        let options = LoadOptions {
            lora: Some(LoraConfig {
                dropout: 0.0,
                ..LoraConfig::default()
            }),
            ..LoadOptions::default()
        };
        let model = Model::from_weights(
            config,
            &VarBuilder::zeros(DType::F32, &device),
            &device,
            &options,
            &VarMap::new(),
        )
        .unwrap();
        assert!(model.has_adapters());
        let mut cache = model.new_cache();
        let ids = Tensor::new(&[[1u32, 2, 3]], &device).unwrap();
        let logits = model.forward(&ids, 0, Some(&mut cache), false).unwrap();
        assert!(
            logits.track_op(),
            "the adapters are variables: the logits are in a graph"
        );
        for layer in cache.layers.iter().flatten() {
            let (k, v) = layer.keys_and_values().unwrap();
            assert!(!k.track_op() && !v.track_op());
        }
        assert_eq!(cache.len(), 3);
    }

    /// The merged copy generation decodes with is the adapted model: the same logits as the
    /// base-plus-adapter products, for a whole sequence and a token at a time from the cache,
    /// and greedy generation (which decodes through it) picks the tokens that re-running the
    /// adapted model on the whole sequence picks.
    #[test]
    fn the_merged_generation_copy_computes_what_the_adapters_compute() {
        use crate::kernels::fused::test_support::{max_abs, max_diff};
        use crate::model::generate::{generate_ids, SamplingConfig};
        use crate::train::probe::tiny_lora_model;
        let device = Device::Cpu;
        let model = tiny_lora_model(false);
        let merged = model
            .merged_for_generation()
            .unwrap()
            .expect("a model with adapters is merged");
        assert!(!merged.has_adapters() && merged.trainable().is_empty());
        let ids: Vec<u32> = (0..12u32).map(|i| (i * 37 + 5) % 2000).collect();
        let input = Tensor::new(ids.as_slice(), &device)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let adapted = model.forward(&input, 0, None, false).unwrap();
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let (diff, scale) = (max_diff(a, b), max_abs(a));
            assert!(
                diff <= 1e-4 * (1.0 + scale),
                "{what}: {diff} (scale {scale})"
            );
        };
        close(
            &adapted,
            &merged.forward(&input, 0, None, false).unwrap(),
            "whole",
        );
        // A token at a time, as decoding runs (the few-rows products).
        let mut cache = merged.new_cache();
        for (position, &id) in ids.iter().enumerate() {
            let one = Tensor::new(&[[id]], &device).unwrap();
            let step = merged
                .forward(&one, position, Some(&mut cache), false)
                .unwrap();
            close(
                &adapted.narrow(1, position, 1).unwrap(),
                &step,
                &format!("position {position}"),
            );
        }
        // Greedy generation against the adapted model re-run on the whole sequence.
        let greedy = SamplingConfig {
            max_new_tokens: 8,
            temperature: 0.0,
            ..SamplingConfig::default()
        };
        let generated = generate_ids(&model, &ids, 1, u32::MAX, &greedy).unwrap();
        let mut sequence = ids.clone();
        for _ in 0..greedy.max_new_tokens {
            let input = Tensor::new(sequence.as_slice(), &device)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let logits = model.forward(&input, 0, None, false).unwrap();
            let last: Vec<f32> =
                logits.squeeze(0).unwrap().to_vec2::<f32>().unwrap()[sequence.len() - 1].clone();
            let best = (0..last.len())
                .max_by(|&a, &b| last[a].total_cmp(&last[b]))
                .unwrap();
            sequence.push(best as u32);
        }
        assert_eq!(generated[0], sequence[ids.len()..]);
    }

    /// Rows that continue one prefix: the prefix through the layers once gives every row the
    /// log-probs and the gradients of the rows run whole, in each pass and with the layers
    /// recomputed in the backward (which runs the rows whole).
    #[test]
    fn a_shared_prefix_gives_the_whole_rows_log_probs_and_gradients() {
        use crate::kernels::fused::test_support::{max_abs, max_diff};
        use crate::train::probe::tiny_lora_model;
        let device = Device::Cpu;
        let (prefix_len, rows, time) = (9, 3, 7);
        let ids = |n: usize, seed: u32| -> Vec<u32> {
            (0..n as u32)
                .map(|i| (i * 13 + seed * 101) % 2000)
                .collect()
        };
        let prefix = Tensor::from_vec(ids(prefix_len, 0), (1, prefix_len), &device).unwrap();
        let own: Vec<u32> = (1..=rows as u32)
            .flat_map(|seed| ids(time + 1, seed))
            .collect();
        let own = Tensor::from_vec(own, (rows, time + 1), &device).unwrap();
        let (inputs, targets) = (
            own.narrow(1, 0, time).unwrap(),
            own.narrow(1, 1, time).unwrap(),
        );
        // The whole rows: the prefix, then each row's tokens; position prefix_len − 1 predicts
        // the row's first token.
        let whole = Tensor::cat(&[&prefix.repeat((rows, 1)).unwrap(), &own], 1).unwrap();
        let whole_len = prefix_len + time;
        let whole_inputs = whole.narrow(1, 0, whole_len).unwrap();
        let whole_targets = whole.narrow(1, 1, whole_len).unwrap();
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let (diff, scale) = (max_diff(a, b), max_abs(a));
            assert!(
                diff <= 1e-4 * (1.0 + scale),
                "{what}: {diff} (scale {scale})"
            );
        };
        for recomputed in [false, true] {
            let model = tiny_lora_model(recomputed);
            // Rows continue the prefix after its last token: the shared part is all but it.
            let shared_prefix = prefix.narrow(1, 0, prefix_len - 1).unwrap();
            let last = prefix
                .narrow(1, prefix_len - 1, 1)
                .unwrap()
                .repeat((rows, 1))
                .unwrap();
            let row_inputs = Tensor::cat(&[&last, &inputs], 1).unwrap();
            let row_targets = Tensor::cat(&[&own.narrow(1, 0, 1).unwrap(), &targets], 1).unwrap();
            for pass in [Pass::Train, Pass::Eval, Pass::BaseOnly] {
                let shared = model
                    .shared_prefix_target_logprobs(
                        &shared_prefix,
                        &row_inputs,
                        &row_targets,
                        0.8,
                        pass,
                    )
                    .unwrap();
                let reference = model
                    .target_logprobs(&whole_inputs, &whole_targets, 0.8, pass)
                    .unwrap()
                    .narrow(1, prefix_len - 1, time + 1)
                    .unwrap();
                let what = format!("{pass:?}, recomputed {recomputed}");
                close(&reference, &shared, &what);
                if pass != Pass::Train {
                    continue;
                }
                let weights_of_positions =
                    Tensor::randn(0f32, 1.0, (rows, time + 1), &device).unwrap();
                let loss =
                    |logp: &Tensor| (logp * &weights_of_positions).unwrap().sum_all().unwrap();
                let a = crate::model::recompute::backward(&loss(&reference)).unwrap();
                let b = crate::model::recompute::backward(&loss(&shared)).unwrap();
                for (name, var) in model.trainable() {
                    let (a, b) = (a.get(var.as_tensor()), b.get(var.as_tensor()));
                    close(a.expect("a gradient"), b.expect("a gradient"), name);
                }
            }
        }
    }
}
