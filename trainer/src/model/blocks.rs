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
        cache: Option<&mut Option<LayerCache>>,
        key_mask: Option<&Tensor>,
        pass: Pass,
    ) -> Result<Tensor> {
        let (q, k, v) = self.project(x, rope, offset, pass)?;
        let attended = match cache {
            Some(slot) => {
                // Generation: the keys and values so far, from the cache's buffers.
                let (k, v) = LayerCache::append(slot, &k, &v)?;
                self.attend_grouped(&q, &k, &v, offset, key_mask)?
            }
            None => {
                // Query head h uses key/value head h / repeats, as in Hugging Face's repeat_kv.
                let repeats = self.heads / self.kv_heads;
                let (k, v) = (repeat_kv(&k, repeats)?, repeat_kv(&v, repeats)?);
                let scores = q.matmul(&k.t()?.contiguous()?)?;
                attention_probs(&scores, self.scale(), offset, key_mask)?.matmul(&v)?
            }
        };
        self.output(&attended, pass)
    }

    /// Attention for rows `x` [rows, time, hidden] at positions `offset..` that all continue
    /// one shared prefix, whose keys and values `prefix` ([1, key/value heads, offset, head
    /// dim] each) were computed once for them: the prefix's keys and values are the rows' first
    /// `offset` keys and values, and the gradient reaches the prefix through them.
    pub(crate) fn forward_after_prefix(
        &self,
        x: &Tensor,
        rope: &Rope,
        prefix: &(Tensor, Tensor),
        pass: Pass,
    ) -> Result<Tensor> {
        let (rows, _, _) = x.dims3()?;
        let offset = prefix.0.dim(2)?;
        let (q, k, v) = self.project(x, rope, offset, pass)?;
        let widen = |shared: &Tensor, own: &Tensor| {
            let (_, heads, time, dim) = shared.dims4()?;
            let shared = shared
                .broadcast_as((rows, heads, time, dim))?
                .contiguous()?;
            Tensor::cat(&[&shared, own], 2)
        };
        let (k, v) = (widen(&prefix.0, &k)?, widen(&prefix.1, &v)?);
        let attended = self.attend_grouped(&q, &k, &v, offset, None)?;
        self.output(&attended, pass)
    }

    /// The rotated queries [batch, heads, time, head dim], rotated keys and values [batch,
    /// key/value heads, time, head dim] of `x` [batch, time, hidden] at positions `offset..`.
    pub(crate) fn project(
        &self,
        x: &Tensor,
        rope: &Rope,
        offset: usize,
        pass: Pass,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (batch, time, _) = x.dims3()?;
        let split = |t: Tensor, heads: usize| {
            t.reshape((batch, time, heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = rope.apply(&split(self.q.forward_pass(x, pass)?, self.heads)?, offset)?;
        let k = rope.apply(
            &split(self.k.forward_pass(x, pass)?, self.kv_heads)?,
            offset,
        )?;
        let v = split(self.v.forward_pass(x, pass)?, self.kv_heads)?;
        Ok((q, k, v))
    }

    fn scale(&self) -> f64 {
        1.0 / (self.head_dim as f64).sqrt()
    }

    /// The queries `q` [batch, heads, time, head dim] at positions `offset..` attending to
    /// every key and value so far ([batch, key/value heads, offset + time, head dim]): the
    /// queries of each key/value head's `repeats` heads as one product with it (no repeated
    /// copy of the keys and values). [batch, heads, time, head dim].
    fn attend_grouped(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        offset: usize,
        key_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (batch, _, time, _) = q.dims4()?;
        let repeats = self.heads / self.kv_heads;
        let keys = k.dim(2)?;
        let grouped = q.reshape((batch, self.kv_heads, repeats * time, self.head_dim))?;
        let scores = grouped
            .matmul(&k.t()?)?
            .reshape((batch, self.heads, time, keys))?;
        let probs = attention_probs(&scores, self.scale(), offset, key_mask)?.reshape((
            batch,
            self.kv_heads,
            repeats * time,
            keys,
        ))?;
        probs
            .matmul(v)?
            .reshape((batch, self.heads, time, self.head_dim))
    }

    /// The heads' outputs [batch, heads, time, head dim] merged and projected: [batch, time,
    /// hidden].
    fn output(&self, attended: &Tensor, pass: Pass) -> Result<Tensor> {
        let (batch, _, time, _) = attended.dims4()?;
        let merged =
            attended
                .transpose(1, 2)?
                .reshape((batch, time, self.heads * self.head_dim))?;
        self.o.forward_pass(&merged, pass)
    }
}

/// One layer's keys and values for generation, [batch, key/value heads, capacity, head dim]
/// buffers of which the first `len` positions are filled: a decoding step writes its token's
/// keys and values in place (the buffers double when full) instead of copying the whole cache.
#[derive(Debug)]
pub struct LayerCache {
    keys: Tensor,
    values: Tensor,
    len: usize,
}

impl LayerCache {
    /// Append `k`, `v` [batch, key/value heads, time, head dim] to `slot` and return every
    /// cached key and value so far (views of the buffers). Detached: the cache serves generation
    /// only, and with trainable adapters the keys and values would otherwise carry the autograd
    /// graph of every earlier decoding step.
    fn append(slot: &mut Option<LayerCache>, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = (k.detach().contiguous()?, v.detach().contiguous()?);
        let time = k.dim(2)?;
        let len = slot.as_ref().map_or(0, |c| c.len);
        let capacity = slot.as_ref().map_or(0, |c| c.keys.dim(2).unwrap_or(0));
        if len + time > capacity {
            let (batch, heads, _, dim) = k.dims4()?;
            let grown = (2 * (len + time)).max(16);
            let keys = Tensor::zeros((batch, heads, grown, dim), k.dtype(), k.device())?;
            let values = Tensor::zeros((batch, heads, grown, dim), v.dtype(), v.device())?;
            if let Some(old) = slot.as_ref() {
                keys.slice_set(&old.keys.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
                values.slice_set(&old.values.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
            }
            *slot = Some(LayerCache { keys, values, len });
        }
        let cache = slot.as_mut().expect("a cache with room");
        cache.keys.slice_set(&k, 2, len)?;
        cache.values.slice_set(&v, 2, len)?;
        cache.len = len + time;
        Ok((
            cache.keys.narrow(2, 0, cache.len)?,
            cache.values.narrow(2, 0, cache.len)?,
        ))
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keep the batch rows `rows` names, in its order (a row may be named several times).
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        self.keys = self.keys.index_select(rows, 0)?;
        self.values = self.values.index_select(rows, 0)?;
        Ok(())
    }

    /// The cached keys and values (views of the filled part of the buffers).
    pub fn keys_and_values(&self) -> Result<(Tensor, Tensor)> {
        Ok((
            self.keys.narrow(2, 0, self.len)?,
            self.values.narrow(2, 0, self.len)?,
        ))
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
        cache: Option<&mut Option<LayerCache>>,
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
        self.mlp_block(&(x + attended)?, eps, pass)
    }

    /// [`Self::forward`] for rows that continue a shared prefix (`Attention::forward_after_prefix`).
    pub(crate) fn forward_after_prefix(
        &self,
        x: &Tensor,
        rope: &Rope,
        eps: f64,
        prefix: &(Tensor, Tensor),
        pass: Pass,
    ) -> Result<Tensor> {
        let attended = self.attention.forward_after_prefix(
            &rms_norm(x, &self.input_norm, eps)?,
            rope,
            prefix,
            pass,
        )?;
        self.mlp_block(&(x + attended)?, eps, pass)
    }

    /// A shared prefix `x` [1, time, hidden] at positions 0..time through the layer: its keys
    /// and values (what the rows that continue it read) and, when `output` is asked for, the
    /// layer's output (the next layer's input; the last layer's is not needed).
    pub(crate) fn prefix_forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        eps: f64,
        output: bool,
        pass: Pass,
    ) -> Result<(Option<Tensor>, (Tensor, Tensor))> {
        let attention = &self.attention;
        let (q, k, v) = attention.project(&rms_norm(x, &self.input_norm, eps)?, rope, 0, pass)?;
        if !output {
            return Ok((None, (k, v)));
        }
        let attended = attention.output(&attention.attend_grouped(&q, &k, &v, 0, None)?, pass)?;
        let out = self.mlp_block(&(x + attended)?, eps, pass)?;
        Ok((Some(out), (k, v)))
    }

    /// h + mlp(norm(h)): the layer's second half.
    fn mlp_block(&self, h: &Tensor, eps: f64, pass: Pass) -> Result<Tensor> {
        let mixed = self
            .mlp
            .forward(&rms_norm(h, &self.post_attention_norm, eps)?, pass)?;
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

    /// The layer's linear modules, to replace (in [`Self::linears`]' order).
    pub(crate) fn linears_mut(&mut self) -> [&mut Linear; 7] {
        [
            &mut self.attention.q,
            &mut self.attention.k,
            &mut self.attention.v,
            &mut self.attention.o,
            &mut self.mlp.gate,
            &mut self.mlp.up,
            &mut self.mlp.down,
        ]
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
