//! A trainable linear layer's product, y = x·Wᵀ + b, as one op with its own backward (full
//! fine-tuning, and the head tied to a trainable embedding).
//!
//! Composed from autograd's primitives a linear layer is five or six graph nodes: the input
//! flattened to rows, Wᵀ as a transposed view, the product, the bias broadcast and added, and the
//! output's leading dimensions restored. In the backward every node's gradient is first a fresh
//! zero tensor and then a sum (candle's gradient store), Wᵀ's gradient is summed into W through
//! a transposed (strided) view, and the bias gradient is a reduction over the rows' axis. Here
//! the op takes x with any leading dimensions, writes b into each output row and accumulates
//! x·Wᵀ onto it by gemm, and its backward forms
//!
//! - gx = g·W, gW = gᵀ·x (in W's own layout), gb = the column sums of g,
//!
//! each only for an input that is in the graph. CPU and f32 only; elsewhere the composition
//! serves, which gives the same numbers (tests compare them, and the backward with float64
//! finite differences).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use crate::kernels::fused::{f32_input, f32_storage};
use crate::kernels::slice_gemm::{product, Matrix};

const OP: &str = "trainable-linear";

/// x [.., in] · Wᵀ + b for W [out, in] and b [out], with gradients for whichever of them autograd
/// tracks. f32 on the CPU.
pub fn trainable_linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    match bias {
        Some(bias) => x.apply_op3(&weight, &bias.contiguous()?, TrainableLinear),
        None => x.apply_op2(&weight, TrainableLinear),
    }
}

/// The op, with or without its bias operand.
struct TrainableLinear;

/// (rows, in, out) of the op's inputs, checked against each other.
fn dims(x: &Shape, weight: &Shape, bias: Option<&Shape>) -> Result<(usize, usize, usize)> {
    let (out, in_dim) = weight.dims2()?;
    let x_in = *x.dims().last().unwrap_or(&0);
    let bias_ok = bias.is_none_or(|b| b.dims() == [out]);
    if x.rank() < 2 || x_in != in_dim || !bias_ok {
        candle_core::bail!("{OP}: input {x:?}, weight {weight:?} and bias {bias:?} do not fit");
    }
    Ok((x.elem_count() / in_dim.max(1), in_dim, out))
}

/// The output's shape: the input's leading dimensions, then `out`.
fn output_shape(x: &Shape, out: usize) -> Shape {
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank checked") = out;
    Shape::from(dims)
}

/// y = x·Wᵀ + b from the op's storages, shaped [.., out] with x's leading dimensions.
fn forward(
    (x, x_layout): (&CpuStorage, &Layout),
    (weight, weight_layout): (&CpuStorage, &Layout),
    bias: Option<(&CpuStorage, &Layout)>,
) -> Result<(CpuStorage, Shape)> {
    let bias_shape = bias.map(|(_, layout)| layout.shape());
    let (rows, in_dim, out) = dims(x_layout.shape(), weight_layout.shape(), bias_shape)?;
    let x_values = f32_input(OP, x, x_layout, "input")?;
    let weight = f32_input(OP, weight, weight_layout, "weight")?;
    let bias = bias
        .map(|(b, layout)| f32_input(OP, b, layout, "bias"))
        .transpose()?;
    let mut y = match bias {
        Some(b) => b.repeat(rows),
        None => vec![0f32; rows * out],
    };
    product(
        &mut y,
        Matrix::new(x_values, rows, in_dim),
        Matrix::new(weight, out, in_dim).t(),
        bias.map(|_| 1.0),
    );
    Ok((CpuStorage::F32(y), output_shape(x_layout.shape(), out)))
}

/// The gradients (x, W, b) for an output gradient, each only for an input autograd tracks.
fn backward(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    grad_y: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let (rows, in_dim, out) = dims(x.shape(), weight.shape(), bias.map(Tensor::shape))?;
    let grad_y = grad_y.contiguous()?;
    let (g_storage, g_layout) = grad_y.storage_and_layout();
    let g_values = f32_storage(OP, &g_storage, g_layout, "output gradient")?;
    let g = Matrix::new(g_values, rows, out);
    let device = x.device();
    let grad_x = if x.track_op() {
        let (w_storage, w_layout) = weight.storage_and_layout();
        let w = f32_storage(OP, &w_storage, w_layout, "weight")?;
        let mut gx = vec![0f32; rows * in_dim];
        product(&mut gx, g, Matrix::new(w, out, in_dim), None);
        Some(Tensor::from_vec(gx, x.shape(), device)?)
    } else {
        None
    };
    let grad_weight = if weight.track_op() {
        let (x_storage, x_layout) = x.storage_and_layout();
        let xs = f32_storage(OP, &x_storage, x_layout, "input")?;
        let mut gw = vec![0f32; out * in_dim];
        product(&mut gw, g.t(), Matrix::new(xs, rows, in_dim), None);
        Some(Tensor::from_vec(gw, (out, in_dim), device)?)
    } else {
        None
    };
    let grad_bias = match bias.filter(|b| b.track_op()) {
        Some(_) => {
            let mut gb = vec![0f32; out];
            for row in g_values.chunks_exact(out) {
                gb.iter_mut().zip(row).for_each(|(sum, v)| *sum += v);
            }
            Some(Tensor::from_vec(gb, out, device)?)
        }
        None => None,
    };
    Ok((grad_x, grad_weight, grad_bias))
}

impl CustomOp2 for TrainableLinear {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        forward((x, x_layout), (weight, weight_layout), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (gx, gw, _) = backward(x, weight, None, grad_y)?;
        Ok((gx, gw))
    }
}

impl CustomOp3 for TrainableLinear {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        forward(
            (x, x_layout),
            (weight, weight_layout),
            Some((bias, bias_layout)),
        )
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        backward(x, weight, Some(bias), grad_y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::fused::test_support::{
        assert_matches_finite_differences, max_diff, to64, weighted_sum,
    };
    use candle_core::{Device, Var};

    /// Σ g ⊙ (x·Wᵀ + b) in float64, x as rows.
    fn loss(x: &Tensor, w: &Tensor, b: &Tensor, g: &Tensor) -> f64 {
        let rows = x.elem_count() / x.dims().last().unwrap();
        let x = to64(x).reshape((rows, ())).unwrap();
        let y = x
            .matmul(&to64(w).t().unwrap())
            .unwrap()
            .broadcast_add(&to64(b))
            .unwrap();
        weighted_sum(&y, &g.reshape((rows, ())).unwrap())
    }

    #[test]
    fn equals_the_float64_composition_and_finite_differences() {
        let device = Device::Cpu;
        // A batch of sequences (leading dimensions kept) and a product split across threads.
        for (leading, in_dim, out) in [(vec![2, 3], 5, 4), (vec![300], 128, 96)] {
            let mut x_shape = leading.clone();
            x_shape.push(in_dim);
            let mut y_shape = leading.clone();
            y_shape.push(out);
            let x = Var::randn(0f32, 1.0, x_shape.as_slice(), &device).unwrap();
            let w = Var::randn(0f32, 0.3, (out, in_dim), &device).unwrap();
            let b = Var::randn(0f32, 0.3, out, &device).unwrap();
            let g = Tensor::randn(0f32, 1.0, y_shape.as_slice(), &device).unwrap();
            let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), b.as_tensor());

            let y = trainable_linear(xt, wt, Some(bt)).unwrap();
            assert_eq!(y.dims(), y_shape.as_slice());
            let expected = to64(xt)
                .reshape(((), in_dim))
                .unwrap()
                .matmul(&to64(wt).t().unwrap())
                .unwrap()
                .broadcast_add(&to64(bt))
                .unwrap()
                .reshape(y_shape.as_slice())
                .unwrap();
            assert!(max_diff(&y, &expected) < 1e-4);

            let grads = (y * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let (gx, gw, gb) = (
                grads.get(xt).unwrap(),
                grads.get(wt).unwrap(),
                grads.get(bt).unwrap(),
            );
            // Small cases element by element against finite differences; the large one
            // against the closed forms gᵀ·x, g·W and the column sums, in float64.
            if in_dim < 10 {
                let rows_x = xt.reshape(((), in_dim)).unwrap();
                let gx = gx.reshape(((), in_dim)).unwrap();
                assert_matches_finite_differences(&rows_x, &gx, |x| loss(x, wt, bt, &g), 1e-4);
                assert_matches_finite_differences(wt, gw, |w| loss(xt, w, bt, &g), 1e-4);
                let gb = gb.reshape((1, out)).unwrap();
                let b_row = bt.reshape((1, out)).unwrap();
                assert_matches_finite_differences(
                    &b_row,
                    &gb,
                    |b| loss(xt, wt, &b.reshape(out).unwrap(), &g),
                    1e-4,
                );
            } else {
                let g64 = to64(&g).reshape(((), out)).unwrap();
                let x64 = to64(xt).reshape(((), in_dim)).unwrap();
                let gw_expected = g64.t().unwrap().matmul(&x64).unwrap();
                let gx_expected = g64.matmul(&to64(wt)).unwrap();
                let gb_expected = g64.sum(0).unwrap();
                assert!(max_diff(gw, &gw_expected) < 1e-3);
                assert!(max_diff(&gx.reshape(((), in_dim)).unwrap(), &gx_expected) < 1e-4);
                assert!(max_diff(gb, &gb_expected) < 1e-3);
            }
        }
    }

    #[test]
    fn without_a_bias_and_with_untracked_inputs() {
        let device = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (7, 6), &device).unwrap();
        let w = Var::randn(0f32, 0.3, (5, 6), &device).unwrap();
        let y = trainable_linear(&x, w.as_tensor(), None).unwrap();
        let expected = to64(&x).matmul(&to64(w.as_tensor()).t().unwrap()).unwrap();
        assert!(max_diff(&y, &expected) < 1e-5);
        let grads = y.sum_all().unwrap().backward().unwrap();
        // x is outside the graph: only W has a gradient, each row the column sums of x.
        assert!(grads.get(&x).is_none());
        let expected = to64(&x)
            .sum_keepdim(0)
            .unwrap()
            .broadcast_as((5, 6))
            .unwrap();
        assert!(max_diff(grads.get(w.as_tensor()).unwrap(), &expected) < 1e-5);
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let device = Device::Cpu;
        let x = Tensor::zeros((3, 4), candle_core::DType::F32, &device).unwrap();
        let w = Tensor::zeros((2, 5), candle_core::DType::F32, &device).unwrap();
        let b = Tensor::zeros(3, candle_core::DType::F32, &device).unwrap();
        let err = trainable_linear(&x, &w, None).unwrap_err().to_string();
        assert!(err.contains("trainable-linear"), "{err}");
        let w = Tensor::zeros((2, 4), candle_core::DType::F32, &device).unwrap();
        assert!(trainable_linear(&x, &w, Some(&b)).is_err());
    }
}
