//! Where training runs: a CUDA GPU when the binary is built with the `cuda` feature and one is
//! present, else the CPU; and whether bf16 can be used there (the original design's
//! `utils/distributed`), and the names of the dtypes configs may ask for. Tests and CI use the
//! CPU.

use candle_core::{DType, Device};

use crate::TrainerError;

/// Settle how many threads candle's CPU ops use, before any tensor work (both are environment
/// variables, read by candle and rayon when first needed). Two choices, each measured:
///
/// Element-wise ops stay on the calling thread unless `CANDLE_NUM_THREADS` says otherwise.
/// candle runs each element-wise op on its own thread pool, whose calling thread spins at a
/// barrier until the others finish: on small tensors the hand-off costs more than the op, and
/// when other processes share the cores a preempted worker leaves the caller spinning a whole
/// time slice. Matrix products (gemm, on rayon's pool) and the fused ops (`fused.rs`, rayon)
/// still use every core. Measured with `bench train` on 2 cores (2026-12-03): tiny full step
/// 0.108 → 0.086 s, tiny LoRA 0.219 → 0.141 s, SmolLM2-shape LoRA 5.76 → 5.61 s, generation at
/// batch 8 1,990 → 2,400 (tiny) and 69.7 → 72.7 tokens/s (SmolLM2 shape); with another process
/// on the cores, a SmolLM2-shape LoRA step took 24.6 s with candle's pool and 10.1 s without.
/// The exception is a bf16 base, whose casts and element-wise ops are not fused: its
/// SmolLM2-shape LoRA step went 14.0 → 19.4 s; `CANDLE_NUM_THREADS=2` restores the pool.
///
/// The matrix products' thread count is counted once, into `RAYON_NUM_THREADS` unless it is
/// set. candle 0.11 asks `utils::get_num_threads` on every product, and without the variable
/// that counts the physical cores by reading and parsing `/proc/cpuinfo` each time: 5.5 % of a
/// tiny full-fine-tuning step's samples in perf (the kernel formatting the file). The count is
/// the one candle would compute (its CPU mask, else the physical cores), so the products split
/// the same way; rayon's pool, which the fused ops use, gets that many threads too.
pub fn settle_cpu_threads() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

/// `work` run on a thread of rayon's pool, the caller waiting for it once.
///
/// A decoding step is a few hundred small parallel products (7 per layer, the head). Called
/// from a thread outside the pool, each one hands its job to the pool and sleeps on a latch
/// until a worker wakes it; from a pool thread the products split among the workers directly.
/// The step's forward through here, the binary before and after alternated (2026-12-07, Intel
/// Xeon with AVX-512, 2 cores, `bench train --shapes smollm2 --modes generate`): batch 1
/// 28.4–30.5 → 31.3–32.4 tokens/s, batch 8 115.9–118.8 → 123.7–123.9.
pub fn on_compute_pool<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    if rayon::current_thread_index().is_some() {
        return work();
    }
    rayon::join(work, || ()).0
}

/// Keep the memory of freed tensors in the heap for the next step instead of handing it back to
/// the kernel (glibc only; an explicit `glibc.malloc.*` setting in `GLIBC_TUNABLES` wins). Call
/// before any tensor work.
///
/// A training step allocates and frees the same few hundred tensors every step. glibc serves an
/// allocation of 128 KiB or more with its own `mmap` until a free raises that threshold, and it
/// gives memory at the top of the heap back once more than twice that is free, so a step's
/// tensors kept landing on fresh pages: about 2,500 page faults a tiny step (each a zeroed page,
/// mostly in the backward's gradient sums), 135 K over a 40-step probe against 21 K with the
/// thresholds fixed at 32 MiB (glibc's largest) and 256 MiB. The binary with and without,
/// alternated (2026-12-05, AMD EPYC with AVX-512): tiny full fine-tuning step 0.038–0.041 →
/// 0.032–0.034 s, tiny LoRA 0.039–0.044 → 0.038–0.042 s, SmolLM2-shape LoRA 1.71 → 1.62 s,
/// 0.5B-shape LoRA 4.66 → 4.38 s (page faults of the run 1.96 M → 0.93 M); peak RSS unchanged
/// (tiny 88–92 MB, 0.5B 3,621 MB). Larger tensors still get their own mapping.
pub fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."));
        if !tuned {
            // SAFETY: mallopt only sets the allocator's parameters; called before other threads
            // allocate, and glibc takes its own lock either way.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
            }
        }
    }
}

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
