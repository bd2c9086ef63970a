//! 4-bit NF4 block quantisation of frozen base weights (the "Q" of QLoRA).
//!
//! Each block of `BLOCK` consecutive weights stores a 4-bit index into the NF4 codebook (the 16
//! quantiles of a normal distribution that QLoRA uses) and one f32 scale, its absolute maximum:
//! 0.5 + 4 / BLOCK bytes a weight, about ¼ of bf16. On the CPU, `nf4_matmul` is one graph node
//! (a candle custom op) that dequantises in forward and again in backward (grad_x = grad_y ·
//! dequant(W)), so the backward graph holds only the 4-bit weight — a plain matmul with the
//! dequantised tensor would keep a dense copy of every layer alive until backward, undoing the
//! memory saving. The base gets no gradient; LoRA weights and the input do. candle's own
//! `QMatMul` has no backward, which is why it is not used here.
//!
//! A product with a few rows (generation: one row per sequence per new token) does not
//! dequantise the weight at all: each weight row is decoded into a small buffer that stays in
//! cache and dotted with the input rows at once (`frozen_matmul::few_rows_product`), so a token
//! costs half a byte per weight read instead of a dense f32 copy written and read again.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::kernels::frozen_matmul::{few_rows_product, WeightRows, FEW_ROWS};

/// NF4 levels, ascending (Dettmers et al., QLoRA, appendix E).
pub const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// Weights per block sharing one scale (even: a block starts on a byte).
pub const BLOCK: usize = 64;

/// The two levels a byte's codes stand for, low nibble first: one lookup per pair of weights.
const PAIR_LEVELS: [[f32; 2]; 256] = {
    let mut table = [[0.0; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = [NF4[byte & 0x0f], NF4[byte >> 4]];
        byte += 1;
    }
    table
};

/// Half the widest gap between adjacent NF4 levels: the worst round-trip error, in units of a
/// block's absolute maximum.
pub fn worst_case_error() -> f32 {
    NF4.windows(2).map(|w| w[1] - w[0]).fold(0.0, f32::max) / 2.0
}

/// A 2-D weight stored in NF4.
#[derive(Debug, Clone)]
pub struct Nf4Tensor {
    rows: usize,
    cols: usize,
    /// Two 4-bit codes per byte, low nibble first.
    codes: Vec<u8>,
    scales: Vec<f32>,
}

fn nearest_level(x: f32) -> u8 {
    let mut best = 0;
    for (index, level) in NF4.iter().enumerate() {
        if (x - level).abs() < (x - NF4[best]).abs() {
            best = index;
        }
    }
    best as u8
}

impl Nf4Tensor {
    pub fn quantize(weight: &Tensor) -> Result<Self> {
        let (rows, cols) = weight.dims2()?;
        let values = weight
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut scales = Vec::with_capacity(values.len().div_ceil(BLOCK));
        let mut codes = vec![0u8; values.len().div_ceil(2)];
        for (block_index, block) in values.chunks(BLOCK).enumerate() {
            let absmax = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            scales.push(absmax);
            for (offset, value) in block.iter().enumerate() {
                let code = if absmax > 0.0 {
                    nearest_level(value / absmax)
                } else {
                    7
                };
                let position = block_index * BLOCK + offset;
                codes[position / 2] |= code << (4 * (position % 2));
            }
        }
        Ok(Self {
            rows,
            cols,
            codes,
            scales,
        })
    }

    /// Bytes held: the packed codes and the per-block scales.
    pub fn bytes(&self) -> usize {
        self.codes.len() + self.scales.len() * std::mem::size_of::<f32>()
    }

    pub fn dequantize(&self, device: &Device) -> Result<Tensor> {
        let mut values = vec![0f32; self.rows * self.cols];
        if self.cols > 0 {
            values
                .par_chunks_mut(self.cols)
                .enumerate()
                .for_each(|(row, out)| self.decode(row * self.cols, out));
        }
        Tensor::from_vec(values, (self.rows, self.cols), device)
    }

    /// The weights at flat positions `start .. start + out.len()` (row-major), into `out`.
    /// Blocks start on even positions, so only the range's first weight can be a byte's high
    /// nibble and only its last a lone low nibble; the rest are decoded a byte at a time.
    fn decode(&self, start: usize, out: &mut [f32]) {
        let mut position = start;
        let mut rest = out;
        while !rest.is_empty() {
            let block = position / BLOCK;
            let take = ((block + 1) * BLOCK - position).min(rest.len());
            let scale = self.scales[block];
            let (chunk, tail) = rest.split_at_mut(take);
            let mut done = 0;
            if position % 2 == 1 {
                chunk[0] = NF4[(self.codes[position / 2] >> 4) as usize] * scale;
                done = 1;
            }
            let pairs = (take - done) / 2;
            let first_byte = (position + done) / 2;
            for (pair, byte) in chunk[done..done + 2 * pairs]
                .chunks_exact_mut(2)
                .zip(&self.codes[first_byte..first_byte + pairs])
            {
                let [low, high] = PAIR_LEVELS[*byte as usize];
                pair[0] = low * scale;
                pair[1] = high * scale;
            }
            if (take - done) % 2 == 1 {
                let last = position + take - 1;
                chunk[take - 1] = NF4[(self.codes[last / 2] & 0x0f) as usize] * scale;
            }
            position += take;
            rest = tail;
        }
    }

    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
}

impl WeightRows for Nf4Tensor {
    fn row<'a>(&'a self, row: usize, buffer: &'a mut [f32]) -> &'a [f32] {
        self.decode(row * self.cols, buffer);
        buffer
    }
}

/// y = x · dequant(W)ᵀ for x [n, in] and W [out, in]; see the module comment.
pub fn nf4_matmul(x: &Tensor, weight: &Arc<Nf4Tensor>) -> Result<Tensor> {
    if !x.device().is_cpu() {
        // No GPU kernel for the custom op: the dense path (more memory, same numbers).
        let w = weight.dequantize(x.device())?.to_dtype(x.dtype())?;
        return x.matmul(&w.t()?);
    }
    x.contiguous()?.apply_op1(Nf4MatMul(weight.clone()))
}

struct Nf4MatMul(Arc<Nf4Tensor>);

impl Nf4MatMul {
    fn dense(&self, dtype: DType, device: &Device) -> Result<Tensor> {
        self.0.dequantize(device)?.to_dtype(dtype)
    }
}

impl CustomOp1 for Nf4MatMul {
    fn name(&self) -> &'static str {
        "nf4-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("nf4-matmul needs a contiguous input".into()))?;
        let device = Device::Cpu;
        if let CpuStorage::F32(values) = storage {
            let n = layout.shape().elem_count() / self.0.cols.max(1);
            if n <= FEW_ROWS && layout.shape().dims().last() == Some(&self.0.cols) {
                let (rows, cols) = (self.0.rows, self.0.cols);
                let y = few_rows_product(&values[start..end], n, cols, rows, &*self.0);
                let mut dims = layout.shape().dims().to_vec();
                *dims.last_mut().expect("checked above") = rows;
                return Ok((CpuStorage::F32(y), Shape::from(dims)));
            }
        }
        let x = match storage {
            CpuStorage::F32(v) => Tensor::from_slice(&v[start..end], layout.shape(), &device)?,
            CpuStorage::F64(v) => Tensor::from_slice(&v[start..end], layout.shape(), &device)?,
            CpuStorage::BF16(v) => Tensor::from_slice(&v[start..end], layout.shape(), &device)?,
            CpuStorage::F16(v) => Tensor::from_slice(&v[start..end], layout.shape(), &device)?,
            _ => candle_core::bail!("nf4-matmul takes float inputs"),
        };
        let y = x.matmul(&self.dense(x.dtype(), &device)?.t()?)?;
        let shape = y.shape().clone();
        let flat = y.flatten_all()?;
        let out = match flat.dtype() {
            DType::F32 => CpuStorage::F32(flat.to_vec1()?),
            DType::F64 => CpuStorage::F64(flat.to_vec1()?),
            DType::BF16 => CpuStorage::BF16(flat.to_vec1()?),
            DType::F16 => CpuStorage::F16(flat.to_vec1()?),
            other => candle_core::bail!("nf4-matmul: unexpected {other:?}"),
        };
        Ok((out, shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            grad_res.matmul(&self.dense(arg.dtype(), arg.device())?)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_error_is_within_the_scheme_bound() {
        let device = Device::Cpu;
        let weight = (Tensor::randn(0f32, 1.0, (48, 200), &device).unwrap() * 0.05).unwrap();
        let quantized = Nf4Tensor::quantize(&weight).unwrap();
        let restored = quantized.dequantize(&device).unwrap();
        let original = weight.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let restored = restored.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let bound = worst_case_error();
        assert!((bound - 0.151_903_6).abs() < 1e-6, "{bound}");
        for (block, (a, b)) in original
            .chunks(BLOCK)
            .zip(restored.chunks(BLOCK))
            .enumerate()
        {
            let absmax = a.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= absmax * bound + 1e-7,
                    "block {block}: {x} vs {y}"
                );
            }
            // The block maximum is exactly representable (±1 · scale).
            let max_index = a
                .iter()
                .enumerate()
                .max_by(|p, q| p.1.abs().total_cmp(&q.1.abs()))
                .unwrap()
                .0;
            assert!((a[max_index] - b[max_index]).abs() < 1e-7);
        }
        let mean_error: f32 = original
            .iter()
            .zip(&restored)
            .map(|(x, y)| (x - y).abs())
            .sum::<f32>()
            / original.len() as f32;
        assert!(mean_error < 0.05 * 0.1, "mean error {mean_error}");
    }

    /// Each weight from its own code and block, one at a time: the reference the decoder's
    /// byte-pair fast path is checked against.
    fn decoded_one_by_one(q: &Nf4Tensor) -> Vec<f64> {
        (0..q.rows * q.cols)
            .map(|i| {
                let code = (q.codes[i / 2] >> (4 * (i % 2))) & 0x0f;
                // The f32 product, as the model uses the weight.
                (NF4[code as usize] * q.scales[i / BLOCK]) as f64
            })
            .collect()
    }

    #[test]
    fn decoding_any_range_matches_weight_by_weight_decoding() {
        // 200 columns: blocks of 64 straddle rows, so rows start on odd positions and in the
        // middle of blocks.
        let weight = Tensor::randn(0f32, 1.0, (7, 201), &Device::Cpu).unwrap();
        let q = Nf4Tensor::quantize(&weight).unwrap();
        let reference = decoded_one_by_one(&q);
        let whole = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap();
        assert_eq!(
            whole
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|&v| v as f64)
                .collect::<Vec<_>>(),
            reference
        );
        for (start, len) in [
            (0, 1),
            (1, 1),
            (1, 2),
            (63, 3),
            (64, 64),
            (65, 200),
            (130, 1277),
        ] {
            let mut out = vec![0f32; len];
            q.decode(start, &mut out);
            for (k, value) in out.iter().enumerate() {
                assert_eq!(
                    *value as f64,
                    reference[start + k],
                    "start {start}, offset {k}"
                );
            }
        }
    }

    /// x · dequant(W)ᵀ in float64 from the weight-by-weight decoding.
    fn product_f64(x: &[f32], n: usize, q: &Nf4Tensor) -> Vec<f64> {
        let w = decoded_one_by_one(q);
        let mut y = vec![0f64; n * q.rows];
        for i in 0..n {
            for j in 0..q.rows {
                y[i * q.rows + j] = (0..q.cols)
                    .map(|k| x[i * q.cols + k] as f64 * w[j * q.cols + k])
                    .sum();
            }
        }
        y
    }

    #[test]
    fn the_product_equals_a_float64_product_on_both_paths() {
        let device = Device::Cpu;
        let q = Arc::new(
            Nf4Tensor::quantize(&Tensor::randn(0f32, 0.05, (37, 200), &device).unwrap()).unwrap(),
        );
        // n ≤ FEW_ROWS decodes row by row; more rows take the dense gemm.
        for n in [1, 3, FEW_ROWS, FEW_ROWS + 5] {
            let x = Tensor::randn(0f32, 1.0, (n, 200), &device).unwrap();
            let y = nf4_matmul(&x, &q).unwrap();
            assert_eq!(y.dims(), &[n, 37]);
            let got = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = product_f64(&x.flatten_all().unwrap().to_vec1::<f32>().unwrap(), n, &q);
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (*g as f64 - w).abs() < 1e-5 * (1.0 + w.abs()),
                    "n {n}, element {k}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn storage_is_about_a_quarter_of_bf16() {
        let weight = Tensor::zeros((256, 256), candle_core::DType::F32, &Device::Cpu).unwrap();
        let quantized = Nf4Tensor::quantize(&weight).unwrap();
        let bf16_bytes = 256 * 256 * 2;
        let ratio = quantized.bytes() as f64 / bf16_bytes as f64;
        assert!((ratio - (0.5 + 4.0 / 64.0) / 2.0).abs() < 1e-9, "{ratio}");
        assert!(ratio < 0.3);
    }
}
