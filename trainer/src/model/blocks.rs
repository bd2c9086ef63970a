//! The decoder's building blocks, each a plain function of tensors: rotary embeddings, RMSNorm,
//! softmax, grouped-query attention with its masks, the SwiGLU MLP, and the layer that holds
//! them.
//!
//! RMSNorm, rotary embeddings, the attention probabilities and the SwiGLU gate have fused CPU
//! ops with their own backward (`fused_rms_norm.rs`, `fused_rope.rs`, `fused_attention.rs`,
//! `fused_swiglu.rs`), which serve in f32 on the CPU (`fused.rs`); their compositions from basic
//! tensor ops here are the reference and the path elsewhere (candle's own fused kernels for
//! them have no backward and would silently cut the graph, candle issue 2168).

use candle_core::{DType, Device, Result, Tensor, D};

use crate::kernels::fused_repeat_kv::repeat_kv;
use crate::model::config::ModelConfig;
use crate::model::lora::{Linear, Pass};

#[derive(Clone)]
pub(crate) struct Rope {
    pub(crate) cos: Tensor,
    pub(crate) sin: Tensor,
}

impl Rope {
    pub(crate) fn new(cfg: &ModelConfig, dtype: DType, device: &Device) -> Result<Self> {
        let dim = cfg.head_dim();
        let inv_freq: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1.0 / cfg.rope_theta.powf(i as f64 / dim as f64) as f32)
            .collect();
        let half = inv_freq.len();
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
        let positions = Tensor::arange(0u32, cfg.max_position_embeddings as u32, device)?
            .to_dtype(DType::F32)?
            .reshape(((), 1))?;
        let freqs = positions.matmul(&inv_freq)?;
        Ok(Self {
            cos: freqs.cos()?.to_dtype(dtype)?,
            sin: freqs.sin()?.to_dtype(dtype)?,
        })
    }

    /// Rotate-half RoPE on x: [batch, heads, time, head_dim], positions offset..offset+time:
    /// the fused op where it applies, else the composition.
    pub(crate) fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let time = x.dim(2)?;
        let cos = self.cos.narrow(0, offset, time)?;
        let sin = self.sin.narrow(0, offset, time)?;
        if crate::kernels::fused::applies(x) && cos.dtype() == DType::F32 {
            return crate::kernels::fused_rope::fused_rope(x, &cos, &sin);
        }
        composed_rope(x, &cos, &sin)
    }
}

/// Rotate-half RoPE from basic ops: x [b, h, t, d], cos and sin [t, d / 2].
pub fn composed_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let dim = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, dim / 2)?;
    let x2 = x.narrow(D::Minus1, dim / 2, dim / 2)?;
    let rotated_1 = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
    let rotated_2 = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
    Tensor::cat(&[rotated_1, rotated_2], D::Minus1)
}

/// silu(gate) ⊙ up: the fused op where it applies, else the composition.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if crate::kernels::fused::applies(gate) && up.dtype() == DType::F32 {
        return crate::kernels::fused_swiglu::fused_swiglu(gate, up);
    }
    composed_swiglu(gate, up)
}

/// [`swiglu`] from basic ops.
pub fn composed_swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.silu()? * up
}

/// RMSNorm over the last dimension, differentiable: the fused op where it applies, else the
/// composition.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if crate::kernels::fused::applies(x) && weight.dtype() == DType::F32 {
        return crate::kernels::fused_rms_norm::fused_rms_norm(x, weight, eps);
    }
    composed_rms_norm(x, weight, eps)
}

/// [`rms_norm`] from basic ops; half-precision inputs are normalised in f32.
pub fn composed_rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = if matches!(dtype, DType::BF16 | DType::F16) {
        x.to_dtype(DType::F32)?
    } else {
        x.clone()
    };
    let rms = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    x.broadcast_div(&rms)?
        .to_dtype(dtype)?
        .broadcast_mul(weight)
}

/// Softmax over the last dimension, differentiable. The max is detached: subtracting any
/// constant leaves softmax unchanged, so its gradient is exactly zero.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    let exp = shifted.exp()?;
    exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)
}

/// Attention probabilities softmax(scale · scores + causal mask + key mask) for raw scores
/// [b, h, t, offset + t] and an additive key mask [b, 1, 1, offset + t]: the fused op where it
/// applies, else the composition.
pub fn attention_probs(
    scores: &Tensor,
    scale: f64,
    offset: usize,
    key_mask: Option<&Tensor>,
) -> Result<Tensor> {
    if crate::kernels::fused::applies(scores) {
        return crate::kernels::fused_attention::fused_attention_probs(
            scores, scale, offset, key_mask,
        );
    }
    composed_attention_probs(scores, scale, offset, key_mask)
}

/// [`attention_probs`] from basic ops.
pub fn composed_attention_probs(
    scores: &Tensor,
    scale: f64,
    offset: usize,
    key_mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (_, _, time, _) = scores.dims4()?;
    let scores = (scores * scale)?;
    let scores =
        scores.broadcast_add(&causal_mask(time, offset, scores.dtype(), scores.device())?)?;
    let scores = match key_mask {
        Some(mask) => scores.broadcast_add(&mask.to_dtype(scores.dtype())?)?,
        None => scores,
    };
    softmax_last_dim(&scores)
}

#[derive(Clone)]
pub(crate) struct Attention {
    pub(crate) q: Linear,
    pub(crate) k: Linear,
    pub(crate) v: Linear,
    pub(crate) o: Linear,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
}

impl Attention {
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        offset: usize,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        key_mask: Option<&Tensor>,
        pass: Pass,
    ) -> Result<Tensor> {
        let (batch, time, _) = x.dims3()?;
        let split = |t: Tensor, heads: usize| {
            t.reshape((batch, time, heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = rope.apply(&split(self.q.forward_pass(x, pass)?, self.heads)?, offset)?;
        let mut k = rope.apply(
            &split(self.k.forward_pass(x, pass)?, self.kv_heads)?,
            offset,
        )?;
        let mut v = split(self.v.forward_pass(x, pass)?, self.kv_heads)?;
        if let Some(slot) = cache {
            if let Some((past_k, past_v)) = slot.as_ref() {
                k = Tensor::cat(&[past_k, &k], 2)?;
                v = Tensor::cat(&[past_v, &v], 2)?;
            }
            // Detached: the cache serves generation only, and with trainable adapters the keys
            // and values would otherwise carry the autograd graph of every earlier decoding
            // step (all of their intermediates, kept alive to the end of generation).
            *slot = Some((k.detach(), v.detach()));
        }
        // Query head h uses key/value head h / repeats, as in Hugging Face's repeat_kv.
        let repeats = self.heads / self.kv_heads;
        let (k, v) = (repeat_kv(&k, repeats)?, repeat_kv(&v, repeats)?);
        let scores = q.matmul(&k.t()?.contiguous()?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let attended = attention_probs(&scores, scale, offset, key_mask)?.matmul(&v)?;
        let merged =
            attended
                .transpose(1, 2)?
                .reshape((batch, time, self.heads * self.head_dim))?;
        self.o.forward_pass(&merged, pass)
    }
}

/// Additive key mask [batch, 1, 1, keys] for rows left-padded by `pads[row]` positions. Padding
/// keys get a large finite penalty rather than −∞: a padding query, which sees only padding keys,
/// then still has a finite softmax (its output is never used), and exp(−10⁴) is exactly 0 for
/// every real query.
pub fn padding_mask(pads: &[usize], keys: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = pads
        .iter()
        .flat_map(|&pad| (0..keys).map(move |j| if j < pad { -1e4 } else { 0.0 }))
        .collect();
    Tensor::from_vec(values, (pads.len(), 1, 1, keys), device)
}

/// Additive mask [time, offset + time]: position i sees keys 0..=offset + i.
pub(crate) fn causal_mask(
    time: usize,
    offset: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let total = offset + time;
    let mask: Vec<f32> = (0..time)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (time, total), device)?.to_dtype(dtype)
}

#[derive(Clone)]
pub(crate) struct Mlp {
    pub(crate) gate: Linear,
    pub(crate) up: Linear,
    pub(crate) down: Linear,
}

impl Mlp {
    pub(crate) fn forward(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let gated = swiglu(
            &self.gate.forward_pass(x, pass)?,
            &self.up.forward_pass(x, pass)?,
        )?;
        self.down.forward_pass(&gated, pass)
    }
}

#[derive(Clone)]
pub(crate) struct Layer {
    pub(crate) attention: Attention,
    pub(crate) mlp: Mlp,
    pub(crate) input_norm: Tensor,
    pub(crate) post_attention_norm: Tensor,
}

impl Layer {
    /// x + attention(norm(x)), then h + mlp(norm(h)): one pre-norm decoder layer.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        eps: f64,
        offset: usize,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        key_mask: Option<&Tensor>,
        pass: Pass,
    ) -> Result<Tensor> {
        let attended = self.attention.forward(
            &rms_norm(x, &self.input_norm, eps)?,
            rope,
            offset,
            cache,
            key_mask,
            pass,
        )?;
        let h = (x + attended)?;
        let mixed = self
            .mlp
            .forward(&rms_norm(&h, &self.post_attention_norm, eps)?, pass)?;
        h + mixed
    }

    /// The layer's tensors that carry a gradient: LoRA matrices, and in full fine-tuning the
    /// linear weights and biases and the norm weights.
    pub(crate) fn parameters(&self) -> Vec<Tensor> {
        let linears = self.linears();
        let mut parameters: Vec<Tensor> = linears
            .iter()
            .flat_map(|(_, linear)| linear.trainable())
            .map(|var| var.as_tensor().clone())
            .collect();
        let biases = linears.iter().filter_map(|(_, linear)| linear.bias());
        let norms = [&self.input_norm, &self.post_attention_norm];
        parameters.extend(biases.chain(norms).filter(|t| t.is_variable()).cloned());
        parameters
    }

    /// The layer's linear modules with their paths inside the layer.
    pub(crate) fn linears(&self) -> [(&'static str, &Linear); 7] {
        [
            ("self_attn.q_proj", &self.attention.q),
            ("self_attn.k_proj", &self.attention.k),
            ("self_attn.v_proj", &self.attention.v),
            ("self_attn.o_proj", &self.attention.o),
            ("mlp.gate_proj", &self.mlp.gate),
            ("mlp.up_proj", &self.mlp.up),
            ("mlp.down_proj", &self.mlp.down),
        ]
    }
}
