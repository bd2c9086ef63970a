//! Where training runs: a CUDA GPU when the binary is built with the `cuda` feature and one is
//! present, else the CPU; and whether bf16 can be used there (the original design's
//! `utils/distributed`), and the names of the dtypes configs may ask for. Tests and CI use the
//! CPU.

use candle_core::{DType, Device};

use crate::TrainerError;

/// The GPU if this build has CUDA support and a GPU answers, else the CPU.
pub fn select() -> Result<Device, TrainerError> {
    Ok(Device::cuda_if_available(0)?)
}

/// `f32`, `bf16` or `f16`, as stage configs name them.
pub fn parse_dtype(name: &str) -> Result<DType, TrainerError> {
    match name {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => Err(TrainerError::Config(format!(
            "dtype `{other}`: expected f32, bf16 or f16"
        ))),
    }
}

/// `requested` if the device computes in it, else f32 (with a warning for a downgrade).
pub fn usable_dtype(device: &Device, requested: DType) -> DType {
    match requested {
        DType::BF16 if !device.supports_bf16() => {
            tracing::warn!("bf16 is not supported on this device; training in f32");
            DType::F32
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_cuda_feature_the_cpu_is_chosen() {
        if cfg!(not(feature = "cuda")) {
            assert!(matches!(select().unwrap(), Device::Cpu));
        }
        assert_eq!(usable_dtype(&Device::Cpu, DType::F32), DType::F32);
        let bf16 = usable_dtype(&Device::Cpu, DType::BF16);
        assert_eq!(
            bf16,
            if Device::Cpu.supports_bf16() {
                DType::BF16
            } else {
                DType::F32
            }
        );
    }
}
