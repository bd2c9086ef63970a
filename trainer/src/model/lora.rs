//! Linear layers for training: a base weight (frozen, 4-bit frozen, or trainable) plus an
//! optional LoRA pair.
//!
//! y = x·Wᵀ + b + (alpha / r) · dropout(x)·Aᵀ·Bᵀ, with A: [r, in] and B: [out, r]. As in PEFT, A
//! starts Kaiming-uniform and B at zero, so a fresh adapter leaves the model exactly as it was,
//! and only the low-rank branch is scaled by alpha / r. Variables are named as PEFT names them
//! (`base_model.model.<module>.lora_A.weight`), so saved adapters load in Python PEFT.

use candle_core::{Module, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use serde::{Deserialize, Serialize};
use unitforge_sandbox::rng::SplitMix64;

use std::sync::Arc;

use crate::kernels::fused_lora::{lora_linear, FrozenBase};
use crate::kernels::quant::{nf4_matmul, Nf4Tensor};

/// LoRA hyper-parameters (the `lora` section of a training config).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f32,
    /// Module names (the last path component) that get adapters.
    pub target_modules: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            dropout: 0.05,
            target_modules: [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// What a forward pass computes with the adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Training: LoRA dropout on.
    Train,
    /// Evaluation and generation: adapters on, no dropout.
    Eval,
    /// Adapters off: the frozen base alone, i.e. the model before fine-tuning (GRPO's reference
    /// policy without a second copy of the weights).
    BaseOnly,
}

/// How the base weight of a linear layer is held.
#[derive(Debug, Clone)]
pub enum BaseWeight {
    /// Frozen: a plain tensor, no gradient.
    Frozen(Tensor),
    /// Frozen and stored in 4 bits; dequantised at each forward.
    Quantized(Arc<Nf4Tensor>),
    /// Full fine-tuning: a variable.
    Trainable(Var),
}

#[derive(Debug, Clone)]
struct LoraPair {
    a: Var,
    b: Var,
    scale: f64,
    dropout: f32,
}

#[derive(Debug, Clone)]
pub struct Linear {
    base: BaseWeight,
    bias: Option<Tensor>,
    lora: Option<LoraPair>,
}

impl BaseWeight {
    /// Bytes the base weight holds (4-bit codes and scales when quantised).
    pub fn bytes(&self) -> usize {
        let dense = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        match self {
            BaseWeight::Frozen(t) => dense(t),
            BaseWeight::Quantized(q) => q.bytes(),
            BaseWeight::Trainable(v) => dense(v.as_tensor()),
        }
    }
}

impl Linear {
    /// Bytes of the base weight (not the bias or adapters).
    pub fn base_bytes(&self) -> usize {
        self.base.bytes()
    }

    pub fn new(base: BaseWeight, bias: Option<Tensor>) -> Self {
        Self {
            base,
            bias,
            lora: None,
        }
    }

    /// Attach a fresh LoRA pair whose variables live in `vb` (a VarBuilder over a VarMap), under
    /// `prefix`, the module's path (`model.layers.0.self_attn.q_proj`).
    pub fn with_lora(
        mut self,
        config: &LoraConfig,
        vb: &VarBuilder,
        prefix: &str,
        seed: u64,
    ) -> Result<Self> {
        let (out_dim, in_dim) = self.shape()?;
        let peft = vb.pp(format!("base_model.model.{prefix}"));
        // PEFT: kaiming_uniform_(a=√5) on A, i.e. U(-1/√in, 1/√in); zeros on B. A is drawn from
        // `seed` and the module path, so runs are reproducible (candle's CPU generator cannot be
        // seeded).
        let bound = 1.0 / (in_dim as f64).sqrt();
        let path_hash = prefix.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
        let mut rng = SplitMix64::new(seed ^ path_hash);
        let values: Vec<f64> = (0..config.rank * in_dim)
            .map(|_| (2.0 * rng.uniform() - 1.0) * bound)
            .collect();
        let drawn =
            Tensor::from_vec(values, (config.rank, in_dim), vb.device())?.to_dtype(vb.dtype())?;
        let a =
            peft.pp("lora_A")
                .get_with_hints((config.rank, in_dim), "weight", Init::Const(0.0))?;
        Var::from_tensor(&a)?.set(&drawn)?;
        let b =
            peft.pp("lora_B")
                .get_with_hints((out_dim, config.rank), "weight", Init::Const(0.0))?;
        // A VarMap hands out its variables' own tensors, so these Vars are the VarMap's: the
        // optimiser updates what the VarMap saves.
        self.lora = Some(LoraPair {
            a: Var::from_tensor(&a)?,
            b: Var::from_tensor(&b)?,
            scale: config.alpha / config.rank as f64,
            dropout: config.dropout,
        });
        Ok(self)
    }

    /// (out, in).
    pub fn shape(&self) -> Result<(usize, usize)> {
        match &self.base {
            BaseWeight::Frozen(w) => w.dims2(),
            BaseWeight::Trainable(w) => w.dims2(),
            BaseWeight::Quantized(q) => Ok(q.shape()),
        }
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    pub fn base(&self) -> &BaseWeight {
        &self.base
    }

    fn weight(&self, like: &Tensor) -> Result<Tensor> {
        match &self.base {
            BaseWeight::Frozen(w) => Ok(w.clone()),
            BaseWeight::Trainable(w) => Ok(w.as_tensor().clone()),
            BaseWeight::Quantized(q) => q.dequantize(like.device())?.to_dtype(like.dtype()),
        }
    }

    /// The base weight with the LoRA update merged in: W + (alpha / r)·B·A.
    pub fn merged_weight(&self, like: &Tensor) -> Result<Tensor> {
        let w = self.weight(like)?;
        match &self.lora {
            None => Ok(w),
            Some(l) => w + (l.b.as_tensor().matmul(l.a.as_tensor())? * l.scale)?,
        }
    }

    /// The layer as generation sees it: a dense frozen base with its LoRA pair merged in
    /// (W + (alpha / r)·B·A, outside autograd, no adapter left), so that a decoding step is one
    /// product instead of the base's and the adapter's two small ones. A 4-bit base is kept as
    /// it is (merging would store it dense, undoing QLoRA's memory saving), and so is a layer
    /// without adapters.
    pub fn merged_for_generation(&self) -> Result<Self> {
        let (BaseWeight::Frozen(w), Some(_)) = (&self.base, &self.lora) else {
            return Ok(self.clone());
        };
        Ok(Linear::new(
            BaseWeight::Frozen(self.merged_weight(w)?.detach().contiguous()?),
            self.bias.as_ref().map(Tensor::detach),
        ))
    }

    /// Forward; dropout on the LoRA branch only when `train`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_pass(x, if train { Pass::Train } else { Pass::Eval })
    }

    /// Forward as `pass` says: with dropout on the LoRA branch (`Train`), without (`Eval`), or
    /// through the base weight alone (`BaseOnly`: the model as it was before its adapters).
    pub fn forward_pass(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        if let Some(y) = self.fused_trainable_forward(x, pass)? {
            return Ok(y);
        }
        let (leading, in_dim) = (&x.dims()[..x.rank() - 1], x.dim(candle_core::D::Minus1)?);
        let flat = x.reshape(((), in_dim))?;
        // [rows, out] back to the input's leading dimensions.
        let unflatten = |y: Tensor| {
            let mut shape = leading.to_vec();
            shape.push(y.dim(1)?);
            y.reshape(shape)
        };
        if let Some(y) = self.fused_forward(&flat, pass)? {
            return unflatten(y);
        }
        let mut y = match &self.base {
            BaseWeight::Quantized(q) => nf4_matmul(&flat, q)?,
            _ => crate::kernels::frozen_matmul::frozen_matmul(&flat, &self.weight(x)?)?,
        };
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        if let Some(l) = self.lora.as_ref().filter(|_| pass != Pass::BaseOnly) {
            let h = if pass == Pass::Train && l.dropout > 0.0 {
                candle_nn::ops::dropout(&flat, l.dropout)?
            } else {
                flat
            };
            let update = h
                .matmul(&l.a.as_tensor().t()?)?
                .matmul(&l.b.as_tensor().t()?)?;
            y = (y + (update * l.scale)?)?;
        }
        unflatten(y)
    }

    /// The layer as one fused op (`fused_lora.rs`) where it serves: adapters on, a frozen f32 or
    /// NF4 base, an f32 CPU input of more than `FEW_ROWS` rows (decoding keeps the few-row
    /// products). `None`: compose it.
    fn fused_forward(&self, flat: &Tensor, pass: Pass) -> Result<Option<Tensor>> {
        let Some(l) = self.lora.as_ref().filter(|_| pass != Pass::BaseOnly) else {
            return Ok(None);
        };
        if !crate::kernels::fused::applies(flat)
            || flat.dim(0)? <= crate::kernels::frozen_matmul::FEW_ROWS
        {
            return Ok(None);
        }
        let base = match &self.base {
            BaseWeight::Frozen(w)
                if w.dtype() == candle_core::DType::F32
                    && w.device().is_cpu()
                    && w.is_contiguous()
                    && !w.track_op() =>
            {
                FrozenBase::Dense(w.clone())
            }
            BaseWeight::Quantized(q) => FrozenBase::Nf4(q.clone()),
            _ => return Ok(None),
        };
        let dropout = if pass == Pass::Train { l.dropout } else { 0.0 };
        let y = lora_linear(
            flat,
            base,
            l.a.as_tensor(),
            l.b.as_tensor(),
            l.scale,
            dropout,
        )?;
        Ok(Some(match &self.bias {
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        }))
    }

    /// The layer as one fused op (`fused_linear.rs`) where its weight is in autograd's graph
    /// (full fine-tuning, or the head tied to a trainable embedding) and it has no adapters: an
    /// f32 CPU input and weight. `None`: compose it.
    fn fused_trainable_forward(&self, x: &Tensor, pass: Pass) -> Result<Option<Tensor>> {
        let weight = match &self.base {
            BaseWeight::Trainable(w) => w.as_tensor(),
            BaseWeight::Frozen(w) if w.track_op() => w,
            _ => return Ok(None),
        };
        let adapted = self.lora.is_some() && pass != Pass::BaseOnly;
        let mut operands = [x, weight].into_iter().chain(self.bias.as_ref());
        if adapted || !operands.all(crate::kernels::fused::applies) {
            return Ok(None);
        }
        crate::kernels::fused_linear::trainable_linear(x, weight, self.bias.as_ref()).map(Some)
    }

    /// The base weight when the layer is exactly x · Wᵀ with W outside autograd: frozen and
    /// dense, no bias, no adapters (the output head under LoRA and QLoRA).
    pub fn plain_frozen_weight(&self) -> Option<&Tensor> {
        match &self.base {
            BaseWeight::Frozen(w)
                if self.bias.is_none() && self.lora.is_none() && !w.track_op() =>
            {
                Some(w)
            }
            _ => None,
        }
    }

    /// The trainable variables of this layer (LoRA pair, or the base in full fine-tuning).
    pub fn trainable(&self) -> Vec<Var> {
        let mut vars = Vec::new();
        if let BaseWeight::Trainable(w) = &self.base {
            vars.push(w.clone());
        }
        if let Some(l) = &self.lora {
            vars.push(l.a.clone());
            vars.push(l.b.clone());
        }
        vars
    }

    pub fn lora_vars(&self) -> Option<(&Var, &Var)> {
        self.lora.as_ref().map(|l| (&l.a, &l.b))
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }
}
