//! The switch between the fused CPU ops — chosen-token log-probabilities
//! (`fused_logprobs.rs`), RMSNorm (`fused_rms_norm.rs`), rotary embeddings (`fused_rope.rs`),
//! attention probabilities (`fused_attention.rs`), the SwiGLU gate (`fused_swiglu.rs`), the
//! product with a frozen weight (`frozen_matmul.rs`), a LoRA layer's product (`fused_lora.rs`),
//! a trainable layer's product (`fused_linear.rs`), grouped-query attention's key/value repeat
//! (`fused_repeat_kv.rs`) and AdamW's in-place update (`optim.rs`) —
//! and their compositions from autograd's primitives.
//!
//! The fused ops serve wherever they apply (a CPU tensor in f32) unless turned off. Both paths
//! give the same numbers (each op's tests compare them, and the fused backward with float64
//! finite differences); the switch exists so that `bench train --compare-unfused` can measure
//! what the fused ops buy in the same run, and so that the composed path stays exercised.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor};

static ENABLED: AtomicBool = AtomicBool::new(true);

thread_local! {
    /// A per-thread setting that overrides the process's (tests run in parallel threads).
    static OVERRIDE: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Turn the fused ops on (the default) or off for this process.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Run `f` with the fused ops on or off on this thread (the ops are chosen on the thread that
/// builds the graph, so their own worker threads need no setting).
pub fn with_enabled<R>(enabled: bool, f: impl FnOnce() -> R) -> R {
    let previous = OVERRIDE.with(|o| o.replace(Some(enabled)));
    let result = f();
    OVERRIDE.with(|o| o.set(previous));
    result
}

/// Whether the fused ops are on for this thread.
pub fn enabled() -> bool {
    OVERRIDE
        .with(Cell::get)
        .unwrap_or_else(|| ENABLED.load(Ordering::Relaxed))
}

/// Whether a fused op serves this input: the switch is on and the tensor is f32 on the CPU.
pub fn applies(input: &Tensor) -> bool {
    enabled() && input.device().is_cpu() && input.dtype() == DType::F32
}

/// The f32 elements of a fused op's contiguous input; an error names the op and the input.
pub(crate) fn f32_input<'a>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> Result<&'a [f32]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: {what} must be contiguous")))?;
    match storage {
        CpuStorage::F32(values) => Ok(&values[start..end]),
        _ => candle_core::bail!("{op}: {what} must be f32"),
    }
}

/// The f32 elements of a tensor's storage that a fused op reads outside `cpu_fwd` (its
/// backward, or a weight it holds); an error names the op and the tensor.
pub(crate) fn f32_storage<'a>(
    op: &str,
    storage: &'a Storage,
    layout: &Layout,
    what: &str,
) -> Result<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) => f32_input(op, cpu, layout, what),
        _ => candle_core::bail!("{op}: {what} is not on the CPU"),
    }
}

/// The token ids of a fused op's contiguous u32 input, each checked against the vocabulary.
pub(crate) fn token_input<'a>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
    vocab: usize,
) -> Result<&'a [u32]> {
    let tokens = match (storage, layout.contiguous_offsets()) {
        (CpuStorage::U32(values), Some((start, end))) => &values[start..end],
        _ => candle_core::bail!("{op}: tokens must be contiguous u32"),
    };
    if let Some(bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
        candle_core::bail!("{op}: token {bad} is outside the vocabulary of {vocab}");
    }
    Ok(tokens)
}

/// Elements a parallel task must have at least: below it rayon's hand-off to another thread
/// costs more than the work (small tensors, and every step of generating with a small model).
const PARALLEL_GRAIN: usize = 32 * 1024;

/// The fewest rows of `row_len` elements one parallel task takes (`with_min_len`): an input of
/// fewer than `PARALLEL_GRAIN` elements is not split, and then runs on the calling thread.
pub(crate) fn min_rows(row_len: usize) -> usize {
    (PARALLEL_GRAIN / row_len.max(1)).max(1)
}

/// What the fused ops' tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use candle_core::{DType, Tensor};

    /// The tensor in float64, the precision of the references.
    pub(crate) fn to64(t: &Tensor) -> Tensor {
        t.to_dtype(DType::F64).unwrap()
    }

    /// The largest absolute element, in float64.
    pub(crate) fn max_abs(t: &Tensor) -> f64 {
        to64(t)
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// Every element of `analytic` (the gradient of `loss` at `point`, a matrix) against
    /// float64 central differences of `loss`, within `tolerance`.
    pub(crate) fn assert_matches_finite_differences(
        point: &Tensor,
        analytic: &Tensor,
        loss: impl Fn(&Tensor) -> f64,
        tolerance: f64,
    ) {
        let values = to64(point).to_vec2::<f64>().unwrap();
        let analytic = to64(analytic).to_vec2::<f64>().unwrap();
        let eps = 1e-6;
        for (i, row) in values.iter().enumerate() {
            for j in 0..row.len() {
                let shifted = |delta: f64| {
                    let mut v = values.clone();
                    v[i][j] += delta;
                    loss(&Tensor::new(v, point.device()).unwrap())
                };
                let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
                assert!(
                    (numeric - analytic[i][j]).abs() < tolerance,
                    "({i}, {j}): {numeric} vs {}",
                    analytic[i][j]
                );
            }
        }
    }

    /// Σ g ⊙ y in float64: the scalar whose gradient with respect to y is g, through which the
    /// tests check a backward.
    pub(crate) fn weighted_sum(y: &Tensor, g: &Tensor) -> f64 {
        (to64(y) * to64(g))
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// The largest absolute element-wise difference, in float64.
    pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        max_abs(&(to64(a) - to64(b)).unwrap())
    }
}
