//! A LoRA layer's product, y = x·Wᵀ + s·dropout(x)·Aᵀ·Bᵀ, as one op with its own backward.
//!
//! Composed from autograd's primitives (`lora::Linear::forward_pass` with the fused ops off),
//! each of the 7 adapters of a decoder layer is about ten graph nodes: dropout's uniform draw,
//! comparison and two scalings, the two small products, the scaling by s and the sum with the
//! base product. Each node writes a tensor as large as the layer's input or output, and in the
//! backward each node's gradient is first a fresh zero tensor and then a sum (candle's gradient
//! store). On the SmolLM2 shape the dropout alone was about a quarter of the forward (2.4–2.6 s
//! with it, 1.8–1.9 s without). Here the
//! dropout mask is one bit per element drawn from SplitMix64 (held by the op for its backward),
//! the low-rank update is accumulated into the base product by gemm (dst := dst + s·t·Bᵀ), and
//! the backward forms
//!
//! - u = g·B, gB = s·gᵀ·t with t = dropout(x)·Aᵀ (recomputed, n × r), gA = s·uᵀ·dropout(x),
//! - gx = g·W + s·(u·A) ⊙ mask / (1 − p), the second term accumulated by gemm without dropout,
//!
//! with W frozen (dense f32 or 4-bit NF4, decoded for each product) and held outside the graph.
//! CPU and f32 only, products of more than `FEW_ROWS` rows (decoding keeps the few-row products);
//! elsewhere the composition serves, which gives the same numbers (tests compare them, and the
//! backward with float64 finite differences).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use unitforge_sandbox::rng::SplitMix64;

use crate::kernels::fused::{f32_input, f32_storage};
use crate::kernels::quant::Nf4Tensor;
use crate::kernels::slice_gemm::{product, Matrix};

const OP: &str = "lora-linear";

/// The frozen base weight W [out, in] of a LoRA layer.
#[derive(Clone)]
pub enum FrozenBase {
    /// A contiguous f32 tensor outside autograd's graph.
    Dense(Tensor),
    /// 4-bit NF4, decoded to f32 for each product.
    Nf4(Arc<Nf4Tensor>),
}

impl FrozenBase {
    fn shape(&self) -> Result<(usize, usize)> {
        match self {
            FrozenBase::Dense(w) => w.dims2(),
            FrozenBase::Nf4(q) => Ok(q.shape()),
        }
    }

    /// `f` on W's values, row-major.
    fn with_values<R>(&self, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
        match self {
            FrozenBase::Dense(w) => {
                let (storage, layout) = w.storage_and_layout();
                f(f32_storage(OP, &storage, layout, "base weight")?)
            }
            FrozenBase::Nf4(q) => FrozenBase::Dense(q.dequantize(&Device::Cpu)?).with_values(f),
        }
    }
}

/// x [n, in] · Wᵀ + scale · dropout(x, p) · Aᵀ · Bᵀ for A [r, in] and B [out, r] (both
/// receiving gradients); p = 0 is no dropout. f32 on the CPU.
pub fn lora_linear(
    x: &Tensor,
    base: FrozenBase,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
    dropout: f32,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let mask = (dropout > 0.0).then(|| DropoutMask::draw(x.elem_count(), dropout, next_seed()));
    x.apply_op3(
        &a.contiguous()?,
        &b.contiguous()?,
        LoraLinear {
            base,
            scale: scale as f32,
            mask,
        },
    )
}

struct LoraLinear {
    base: FrozenBase,
    scale: f32,
    mask: Option<DropoutMask>,
}

/// The dimensions (n, in, r, out) of the op's inputs, checked against each other.
fn dims(
    op: &LoraLinear,
    x: &Layout,
    a: &Layout,
    b: &Layout,
) -> Result<(usize, usize, usize, usize)> {
    let (n, in_dim) = x.shape().dims2()?;
    let (rank, a_in) = a.shape().dims2()?;
    let (out, b_rank) = b.shape().dims2()?;
    let base = op.base.shape()?;
    let mask_len = op.mask.as_ref().map_or(n * in_dim, |m| m.len);
    if a_in != in_dim || b_rank != rank || base != (out, in_dim) || mask_len != n * in_dim {
        candle_core::bail!(
            "{OP}: input {:?}, A {:?}, B {:?}, base {base:?}, dropout mask of {mask_len}",
            x.shape(),
            a.shape(),
            b.shape()
        );
    }
    Ok((n, in_dim, rank, out))
}

impl LoraLinear {
    /// dropout(x): x itself without dropout, else a masked and rescaled copy.
    fn dropped<'x>(&self, x: &'x [f32]) -> Cow<'x, [f32]> {
        match &self.mask {
            None => Cow::Borrowed(x),
            Some(mask) => Cow::Owned(mask.apply(x)),
        }
    }
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        a: &CpuStorage,
        a_layout: &Layout,
        b: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, in_dim, rank, out) = dims(self, x_layout, a_layout, b_layout)?;
        let x = f32_input(OP, x, x_layout, "input")?;
        let a = f32_input(OP, a, a_layout, "lora_A")?;
        let b = f32_input(OP, b, b_layout, "lora_B")?;
        let dropped = self.dropped(x);
        let mut t = vec![0f32; n * rank];
        product(
            &mut t,
            Matrix::new(&dropped, n, in_dim),
            Matrix::new(a, rank, in_dim).t(),
            None,
        );
        let mut y = vec![0f32; n * out];
        self.base.with_values(|w| {
            product(
                &mut y,
                Matrix::new(x, n, in_dim),
                Matrix::new(w, out, in_dim).t(),
                None,
            );
            Ok(())
        })?;
        product(
            &mut y,
            Matrix::new(&t, n, rank),
            Matrix::new(b, out, rank).t(),
            Some(self.scale),
        );
        Ok((CpuStorage::F32(y), Shape::from((n, out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad_y = grad_y.contiguous()?;
        let (n, in_dim, rank, out) = dims(self, x.layout(), a.layout(), b.layout())?;
        let (x_storage, x_layout) = x.storage_and_layout();
        let (a_storage, a_layout) = a.storage_and_layout();
        let (b_storage, b_layout) = b.storage_and_layout();
        let (g_storage, g_layout) = grad_y.storage_and_layout();
        let xs = f32_storage(OP, &x_storage, x_layout, "input")?;
        let a_values = f32_storage(OP, &a_storage, a_layout, "lora_A")?;
        let b_values = f32_storage(OP, &b_storage, b_layout, "lora_B")?;
        let g = f32_storage(OP, &g_storage, g_layout, "output gradient")?;
        let (g, a_m, b_m) = (
            Matrix::new(g, n, out),
            Matrix::new(a_values, rank, in_dim),
            Matrix::new(b_values, out, rank),
        );
        let dropped = self.dropped(xs);
        let dropped = Matrix::new(&dropped, n, in_dim);

        let mut u = vec![0f32; n * rank];
        product(&mut u, g, b_m, None);
        let mut t = vec![0f32; n * rank];
        product(&mut t, dropped, a_m.t(), None);
        let mut grad_b = vec![0f32; out * rank];
        product(
            &mut grad_b,
            g.t(),
            Matrix::new(&t, n, rank),
            Some(self.scale),
        );
        let mut grad_a = vec![0f32; rank * in_dim];
        product(
            &mut grad_a,
            Matrix::new(&u, n, rank).t(),
            dropped,
            Some(self.scale),
        );

        // An input outside the graph (the first layer's, from a frozen embedding) needs none.
        let grad_x = if x.track_op() {
            let mut grad_x = vec![0f32; n * in_dim];
            self.base.with_values(|w| {
                product(&mut grad_x, g, Matrix::new(w, out, in_dim), None);
                Ok(())
            })?;
            let u = Matrix::new(&u, n, rank);
            match &self.mask {
                None => product(&mut grad_x, u, a_m, Some(self.scale)),
                Some(mask) => {
                    let mut through_a = vec![0f32; n * in_dim];
                    product(&mut through_a, u, a_m, None);
                    mask.accumulate(&through_a, self.scale, &mut grad_x);
                }
            }
            Some(Tensor::from_vec(grad_x, (n, in_dim), &Device::Cpu)?)
        } else {
            None
        };
        Ok((
            grad_x,
            Some(Tensor::from_vec(grad_a, (rank, in_dim), &Device::Cpu)?),
            Some(Tensor::from_vec(grad_b, (out, rank), &Device::Cpu)?),
        ))
    }
}

/// Dropout as one bit per element (set: kept), with the scale 1 / P(kept) for kept elements.
struct DropoutMask {
    kept: Vec<u64>,
    len: usize,
    keep_scale: f32,
}

/// Mask words drawn from one generator: the draw is the same whatever the thread count.
const WORDS_PER_TASK: usize = 64;

/// Where the next dropout mask's generator starts: a process-wide sequence, so a run that makes
/// the same calls draws the same masks (candle's own dropout cannot be seeded).
fn next_seed() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0x1f0a_5eed_d0d0_2026);
    NEXT.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
}

impl DropoutMask {
    /// Drop each of `len` elements with probability `p` (to 1/65,536: an element is dropped when
    /// 16 random bits fall below round(p·65,536), and kept ones are scaled by the exact inverse
    /// of the resulting keep probability, so the expectation is x).
    fn draw(len: usize, p: f32, seed: u64) -> Self {
        let threshold = (p.clamp(0.0, 1.0) as f64 * 65_536.0).round() as u32;
        let keep_probability = 1.0 - threshold as f64 / 65_536.0;
        let mut kept = vec![0u64; len.div_ceil(64)];
        kept.par_chunks_mut(WORDS_PER_TASK)
            .enumerate()
            .for_each(|(task, words)| {
                let mut rng =
                    SplitMix64::new(seed ^ (task as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
                for word in words {
                    for quarter in 0..16 {
                        let bits = rng.next_u64();
                        for lane in 0..4 {
                            let draw = ((bits >> (16 * lane)) & 0xffff) as u32;
                            *word |= u64::from(draw >= threshold) << (4 * quarter + lane);
                        }
                    }
                }
            });
        Self {
            kept,
            len,
            keep_scale: if keep_probability > 0.0 {
                (1.0 / keep_probability) as f32
            } else {
                0.0
            },
        }
    }

    fn factor(&self, index: usize) -> f32 {
        if self.kept[index / 64] >> (index % 64) & 1 == 1 {
            self.keep_scale
        } else {
            0.0
        }
    }

    /// dropout(x): kept elements scaled, dropped ones zero.
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        self.with_factors(&mut out, x, |o, x, factor| *o = x * factor);
        out
    }

    /// dst += s · dropout(v).
    fn accumulate(&self, v: &[f32], s: f32, dst: &mut [f32]) {
        self.with_factors(dst, v, |d, v, factor| *d += s * v * factor);
    }

    /// `f(dst[i], v[i], factor of i)` for every element, in parallel tasks.
    fn with_factors(&self, dst: &mut [f32], v: &[f32], f: impl Fn(&mut f32, f32, f32) + Sync) {
        let task = 64 * WORDS_PER_TASK;
        dst.par_chunks_mut(task)
            .zip(v.par_chunks(task))
            .enumerate()
            .for_each(|(index, (dst, v))| {
                for (offset, (d, &v)) in dst.iter_mut().zip(v).enumerate() {
                    f(d, v, self.factor(index * task + offset));
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::fused::test_support::{assert_matches_finite_differences, max_diff, to64};
    use crate::kernels::quant::Nf4Tensor;
    use candle_core::{DType, Var};

    const SCALE: f64 = 2.0;

    struct Case {
        x: Var,
        a: Var,
        b: Var,
        w: Tensor,
        g: Tensor,
    }

    fn case(n: usize, in_dim: usize, rank: usize, out: usize) -> Case {
        let device = Device::Cpu;
        Case {
            x: Var::randn(0f32, 1.0, (n, in_dim), &device).unwrap(),
            a: Var::randn(0f32, 0.3, (rank, in_dim), &device).unwrap(),
            b: Var::randn(0f32, 0.3, (out, rank), &device).unwrap(),
            w: Tensor::randn(0f32, 0.3, (out, in_dim), &device).unwrap(),
            g: Tensor::randn(0f32, 1.0, (n, out), &device).unwrap(),
        }
    }

    /// The mask as a tensor of factors (0 or 1 / P(kept)) shaped like x.
    fn factors(mask: &DropoutMask, shape: &[usize]) -> Tensor {
        let values: Vec<f32> = (0..mask.len).map(|i| mask.factor(i)).collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    /// The same layer composed in float64: x·Wᵀ + s·(x ⊙ factors)·Aᵀ·Bᵀ.
    fn reference(x: &Tensor, w: &Tensor, a: &Tensor, b: &Tensor, factors: &Tensor) -> Tensor {
        let dropped = (to64(x) * to64(factors)).unwrap();
        let base = to64(x).matmul(&to64(w).t().unwrap()).unwrap();
        let update = dropped
            .matmul(&to64(a).t().unwrap())
            .unwrap()
            .matmul(&to64(b).t().unwrap())
            .unwrap();
        (base + (update * SCALE).unwrap()).unwrap()
    }

    /// Σ g ⊙ y in float64.
    fn loss(y: &Tensor, g: &Tensor) -> f64 {
        crate::kernels::fused::test_support::weighted_sum(y, g)
    }

    /// The op's output and its gradients for x, A and B, with the dropout mask it drew.
    fn run(c: &Case, base: FrozenBase, dropout: f32) -> (Tensor, [Tensor; 3], Tensor) {
        let x = c.x.as_tensor().contiguous().unwrap();
        let seed = 7;
        let mask = (dropout > 0.0).then(|| DropoutMask::draw(x.elem_count(), dropout, seed));
        let shown = match &mask {
            Some(m) => factors(m, x.dims()),
            None => Tensor::ones(x.dims(), DType::F32, &Device::Cpu).unwrap(),
        };
        let op = LoraLinear {
            base,
            scale: SCALE as f32,
            mask,
        };
        let y =
            c.x.as_tensor()
                .apply_op3(c.a.as_tensor(), c.b.as_tensor(), op)
                .unwrap();
        let grads = (&y * &c.g).unwrap().sum_all().unwrap().backward().unwrap();
        let grad = |v: &Var| grads.get(v.as_tensor()).unwrap().clone();
        (y, [grad(&c.x), grad(&c.a), grad(&c.b)], shown)
    }

    #[test]
    fn forward_and_gradients_match_float64_with_and_without_dropout() {
        for dropout in [0.0, 0.3] {
            let c = case(23, 19, 4, 17);
            let (y, [gx, ga, gb], factors) = run(&c, FrozenBase::Dense(c.w.clone()), dropout);
            let expected = reference(
                c.x.as_tensor(),
                &c.w,
                c.a.as_tensor(),
                c.b.as_tensor(),
                &factors,
            );
            assert!(max_diff(&y, &expected) < 1e-4, "dropout {dropout}");
            let at = |x: &Tensor, a: &Tensor, b: &Tensor| {
                loss(&reference(x, &c.w, a, b, &factors), &c.g)
            };
            let (x, a, b) = (c.x.as_tensor(), c.a.as_tensor(), c.b.as_tensor());
            assert_matches_finite_differences(x, &gx, |x| at(x, a, b), 1e-4);
            assert_matches_finite_differences(a, &ga, |a| at(x, a, b), 1e-4);
            assert_matches_finite_differences(b, &gb, |b| at(x, a, b), 1e-4);
        }
    }

    #[test]
    fn an_nf4_base_is_its_decoded_weight() {
        let c = case(20, 64, 8, 12);
        let quantized = Arc::new(Nf4Tensor::quantize(&c.w).unwrap());
        let decoded = quantized.dequantize(&Device::Cpu).unwrap();
        let (y, [gx, ga, gb], factors) = run(&c, FrozenBase::Nf4(quantized), 0.1);
        let (yd, [gxd, gad, gbd], _) = {
            // The same mask (seed) with the decoded weight as a dense base.
            run(&c, FrozenBase::Dense(decoded.clone()), 0.1)
        };
        let expected = reference(
            c.x.as_tensor(),
            &decoded,
            c.a.as_tensor(),
            c.b.as_tensor(),
            &factors,
        );
        assert!(max_diff(&y, &expected) < 1e-4);
        for (fused, dense) in [(&y, &yd), (&gx, &gxd), (&ga, &gad), (&gb, &gbd)] {
            assert!(max_diff(fused, dense) < 1e-5);
        }
    }

    #[test]
    fn large_products_across_threads_equal_the_composition() {
        // Above PARALLEL_MULTIPLY_ADDS, and the dropout mask over several tasks.
        let c = case(300, 160, 8, 96);
        let (y, [gx, ga, gb], factors) = run(&c, FrozenBase::Dense(c.w.clone()), 0.05);
        let x64 = Var::from_tensor(&to64(c.x.as_tensor())).unwrap();
        let a64 = Var::from_tensor(&to64(c.a.as_tensor())).unwrap();
        let b64 = Var::from_tensor(&to64(c.b.as_tensor())).unwrap();
        let expected = reference(
            x64.as_tensor(),
            &c.w,
            a64.as_tensor(),
            b64.as_tensor(),
            &factors,
        );
        assert!(max_diff(&y, &expected) < 1e-3);
        let grads = (&expected * to64(&c.g))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (fused, var) in [(&gx, &x64), (&ga, &a64), (&gb, &b64)] {
            assert!(max_diff(fused, grads.get(var.as_tensor()).unwrap()) < 1e-3);
        }
    }

    #[test]
    fn dropout_keeps_the_expectation_and_the_drop_rate() {
        let len = 200_000;
        let mask = DropoutMask::draw(len, 0.05, 11);
        let dropped = (0..len).filter(|&i| mask.factor(i) == 0.0).count();
        // Binomial(200 000, 0.05): mean 10 000, sd ≈ 97.
        assert!((dropped as i64 - 10_000).abs() < 500, "{dropped} dropped");
        let mean: f64 = (0..len).map(|i| mask.factor(i) as f64).sum::<f64>() / len as f64;
        assert!((mean - 1.0).abs() < 0.01, "mean factor {mean}");
        // The same seed draws the same mask; another seed another.
        assert_eq!(DropoutMask::draw(len, 0.05, 11).kept, mask.kept);
        assert_ne!(DropoutMask::draw(len, 0.05, 12).kept, mask.kept);
        // p = 0 keeps all, p = 1 drops all.
        assert!(DropoutMask::draw(1000, 0.0, 3)
            .kept
            .iter()
            .take(15)
            .all(|w| *w == u64::MAX));
        let all_dropped = DropoutMask::draw(1000, 1.0, 3);
        assert!((0..1000).all(|i| all_dropped.factor(i) == 0.0));
    }

    #[test]
    fn mismatched_shapes_are_an_error() {
        let c = case(5, 6, 2, 3);
        let wrong_base = Tensor::zeros((4, 6), DType::F32, &Device::Cpu).unwrap();
        let err = lora_linear(
            c.x.as_tensor(),
            FrozenBase::Dense(wrong_base),
            c.a.as_tensor(),
            c.b.as_tensor(),
            1.0,
            0.0,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("lora-linear"), "{err}");
    }
}
