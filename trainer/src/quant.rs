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

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};

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

/// Weights per block sharing one scale.
pub const BLOCK: usize = 64;

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
        let count = self.rows * self.cols;
        let values: Vec<f32> = (0..count)
            .map(|i| {
                NF4[((self.codes[i / 2] >> (4 * (i % 2))) & 0x0f) as usize] * self.scales[i / BLOCK]
            })
            .collect();
        Tensor::from_vec(values, (self.rows, self.cols), device)
    }

    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
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
