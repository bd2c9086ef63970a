//! The trainer on a GPU against the same trainer on the CPU: logits, LoRA gradients and greedy
//! generation of one random checkpoint. Built only with `--features cuda` (`make check-cuda`
//! compiles it here); `scripts/gpu-check.sh` runs it on a machine with a GPU, where it fails if
//! no CUDA device answers.
#![cfg(feature = "cuda")]

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use common::{lora, max_abs, max_abs_diff, randn, random_weights, tiny_config, write_checkpoint};
use unitforge_trainer::model::config::ModelConfig;
use unitforge_trainer::model::decoder::{LoadOptions, Model};
use unitforge_trainer::model::generate::{generate_ids, SamplingConfig};

fn gpu() -> Device {
    Device::new_cuda(0).expect("a CUDA device: this test is built only with --features cuda")
}

fn options() -> LoadOptions {
    LoadOptions {
        lora: Some(lora(2)),
        ..LoadOptions::default()
    }
}

/// The same checkpoint on the CPU and on the GPU, with identical non-zero LoRA adapters.
fn twins(dir: &std::path::Path) -> (Model, Model) {
    let config: ModelConfig = serde_json::from_value(tiny_config()).unwrap();
    write_checkpoint(dir, &random_weights(&config, 1, DType::F32));
    let cpu = Model::load(dir, &Device::Cpu, &options(), &VarMap::new()).unwrap();
    let gpu = Model::load(dir, &gpu(), &options(), &VarMap::new()).unwrap();
    for (index, ((name, on_cpu), (gpu_name, on_gpu))) in
        cpu.trainable().iter().zip(gpu.trainable()).enumerate()
    {
        assert_eq!(name, gpu_name);
        let value = randn(100 + index as u64, on_cpu.dims(), 0.1)
            .to_dtype(DType::F32)
            .unwrap();
        on_cpu.set(&value).unwrap();
        on_gpu
            .set(&value.to_device(on_gpu.device()).unwrap())
            .unwrap();
    }
    (cpu, gpu)
}

fn ids(device: &Device) -> Tensor {
    Tensor::new(
        &[
            [3u32, 17, 42, 5, 88, 1, 64, 9],
            [7, 7, 12, 95, 0, 33, 2, 50],
        ],
        device,
    )
    .unwrap()
}

#[test]
fn gpu_logits_gradients_and_generation_equal_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let (cpu, gpu) = twins(dir.path());

    let cpu_logits = cpu.forward(&ids(&Device::Cpu), 0, None, true).unwrap();
    let gpu_logits = gpu.forward(&ids(gpu.device()), 0, None, true).unwrap();
    let scale = max_abs(&cpu_logits);
    let diff = max_abs_diff(&cpu_logits, &gpu_logits.to_device(&Device::Cpu).unwrap());
    assert!(
        diff < 1e-4 * scale.max(1.0),
        "logits: max |cpu - gpu| = {diff} (scale {scale})"
    );

    // The gradient of one weighted sum of the logits, for every LoRA matrix.
    let probe = randn(7, cpu_logits.dims(), 1.0)
        .to_dtype(DType::F32)
        .unwrap();
    let cpu_grads = (&cpu_logits * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gpu_probe = probe.to_device(gpu.device()).unwrap();
    let gpu_grads = (&gpu_logits * &gpu_probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for ((name, on_cpu), (_, on_gpu)) in cpu.trainable().iter().zip(gpu.trainable()) {
        let expected = cpu_grads.get(on_cpu).unwrap();
        let got = gpu_grads
            .get(on_gpu)
            .unwrap()
            .to_device(&Device::Cpu)
            .unwrap();
        let diff = max_abs_diff(expected, &got);
        let scale = max_abs(expected).max(1e-3);
        assert!(
            diff < 1e-3 * scale,
            "{name}: max |cpu - gpu| = {diff} (scale {scale})"
        );
    }

    let greedy = SamplingConfig {
        max_new_tokens: 12,
        temperature: 0.0,
        ..SamplingConfig::default()
    };
    let prompt = [3u32, 17, 42, 5];
    assert_eq!(
        generate_ids(&cpu, &prompt, 2, u32::MAX, &greedy).unwrap(),
        generate_ids(&gpu, &prompt, 2, u32::MAX, &greedy).unwrap(),
        "greedy generation differs between CPU and GPU"
    );
}
