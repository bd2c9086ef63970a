//! Helpers shared by the trainer's integration tests.
#![allow(dead_code)] // each test binary uses a part

use candle_core::{Device, Tensor};
use unitforge_sandbox::rng::SplitMix64;

/// Deterministic normal samples (candle's CPU device cannot be seeded), f64.
pub fn randn(seed: u64, shape: &[usize], scale: f64) -> Tensor {
    let mut rng = SplitMix64::new(seed);
    let count: usize = shape.iter().product();
    let values: Vec<f64> = (0..count).map(|_| scale * rng.normal()).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// Largest absolute element of an f32 tensor.
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Largest absolute element-wise difference of two f32 tensors.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    max_abs(&(a - b).unwrap())
}
