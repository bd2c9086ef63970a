//! Numerics of the trainer's model against independent references: candle-transformers' Qwen2
//! on the same random weights, exact LoRA identities, float64 finite differences, NF4 dequantised
//! weights.

mod common;

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use common::{
    lora, max_abs, max_abs_diff, randn, random_weights, randomise_b, tiny_config, write_checkpoint,
};
use unitforge_trainer::kernels::quant::Nf4Tensor;
use unitforge_trainer::model::config::ModelConfig;
use unitforge_trainer::model::decoder::{LoadOptions, Model};

fn config() -> ModelConfig {
    serde_json::from_value(tiny_config()).unwrap()
}

fn load(dir: &Path, options: &LoadOptions, varmap: &VarMap) -> Model {
    Model::load(dir, &Device::Cpu, options, varmap).unwrap()
}

fn ids() -> Tensor {
    Tensor::new(
        &[
            [3u32, 17, 42, 5, 88, 1, 64, 9, 23],
            [7, 7, 12, 95, 0, 33, 2, 50, 11],
        ],
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn logits_match_candle_transformers_qwen2() {
    let dir = tempfile::tempdir().unwrap();
    let weights = random_weights(&config(), 1, DType::F32);
    write_checkpoint(dir.path(), &weights);
    let ours = load(dir.path(), &LoadOptions::default(), &VarMap::new())
        .forward(&ids(), 0, None, false)
        .unwrap();

    let reference_config: candle_transformers::models::qwen2::Config =
        serde_json::from_value(tiny_config()).unwrap();
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.path().join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    let mut base =
        candle_transformers::models::qwen2::Model::new(&reference_config, vb.clone()).unwrap();
    let hidden = base.forward(&ids(), 0, None).unwrap();
    let reference = hidden
        .broadcast_matmul(&weights["lm_head.weight"].t().unwrap())
        .unwrap();
    assert_eq!(ours.dims(), reference.dims());
    let diff = max_abs_diff(&ours, &reference);
    assert!(diff < 1e-4, "max |ours - qwen2| = {diff}");
    // And the causal-LM head's last-position logits.
    let mut causal =
        candle_transformers::models::qwen2::ModelForCausalLM::new(&reference_config, vb).unwrap();
    let last = causal.forward(&ids(), 0).unwrap();
    let diff = max_abs_diff(&ours.narrow(1, 8, 1).unwrap(), &last);
    assert!(diff < 1e-4, "last position: {diff}");
}

#[test]
fn cached_decoding_matches_the_full_forward() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &random_weights(&config(), 2, DType::F32));
    let model = load(dir.path(), &LoadOptions::default(), &VarMap::new());
    let full = model.forward(&ids(), 0, None, false).unwrap();
    let mut cache = model.new_cache();
    let prefix = model
        .forward(&ids().narrow(1, 0, 5).unwrap(), 0, Some(&mut cache), false)
        .unwrap();
    let mut pieces = vec![prefix];
    for position in 5..9 {
        pieces.push(
            model
                .forward(
                    &ids().narrow(1, position, 1).unwrap(),
                    position,
                    Some(&mut cache),
                    false,
                )
                .unwrap(),
        );
    }
    assert_eq!(cache.len(), 9);
    let stepped = Tensor::cat(&pieces, 1).unwrap();
    assert!(max_abs_diff(&full, &stepped) < 1e-5);
}

#[test]
fn bf16_checkpoints_load() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &random_weights(&config(), 3, DType::BF16));
    let model = load(
        dir.path(),
        &LoadOptions {
            dtype: DType::BF16,
            ..LoadOptions::default()
        },
        &VarMap::new(),
    );
    let logits = model.forward(&ids(), 0, None, false).unwrap();
    assert_eq!(logits.dtype(), DType::F32);
    let f32_model = load(dir.path(), &LoadOptions::default(), &VarMap::new());
    let reference = f32_model.forward(&ids(), 0, None, false).unwrap();
    // bf16 keeps ~3 significant digits; errors compound over the layers.
    let scale = max_abs(&reference);
    let diff = max_abs_diff(&logits, &reference);
    assert!(
        diff < 0.05 * scale,
        "bf16 vs f32: {diff} with logits up to {scale}"
    );
}

#[test]
fn a_fresh_adapter_leaves_the_logits_exactly_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &random_weights(&config(), 4, DType::F32));
    let base = load(dir.path(), &LoadOptions::default(), &VarMap::new())
        .forward(&ids(), 0, None, false)
        .unwrap();
    let varmap = VarMap::new();
    let adapted = load(
        dir.path(),
        &LoadOptions {
            lora: Some(lora(4)),
            ..LoadOptions::default()
        },
        &varmap,
    );
    assert_eq!(
        adapted.trainable().len(),
        2 * 7 * 2,
        "A and B on 7 modules in 2 layers"
    );
    assert_eq!(
        max_abs_diff(&base, &adapted.forward(&ids(), 0, None, false).unwrap()),
        0.0
    );
}

fn weighted_loss(model: &Model, probe: &Tensor) -> Tensor {
    let logits = model
        .forward(&ids(), 0, None, false)
        .unwrap()
        .to_dtype(probe.dtype())
        .unwrap();
    (logits * probe).unwrap().sum_all().unwrap()
}

#[test]
fn lora_gradients_match_float64_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &random_weights(&config(), 5, DType::F64));
    let options = LoadOptions {
        dtype: DType::F64,
        lora: Some(lora(2)),
        ..LoadOptions::default()
    };
    let model = load(dir.path(), &options, &VarMap::new());
    randomise_b(&model, 6);
    let probe = randn(7, &[2, 9, 96], 1.0);
    let grads = weighted_loss(&model, &probe).backward().unwrap();
    let epsilon = 1e-6;
    let mut checked = 0;
    for (name, var) in model.trainable().iter().filter(|(n, _)| {
        n.contains("layers.0.self_attn.q_proj") || n.contains("layers.1.mlp.down_proj")
    }) {
        let analytic = grads
            .get(var)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let original = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for index in [0, original.len() / 3, original.len() - 1] {
            let nudged = |delta: f64| {
                let mut values = original.clone();
                values[index] += delta;
                var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                weighted_loss(&model, &probe).to_scalar::<f64>().unwrap()
            };
            let numeric = (nudged(epsilon) - nudged(-epsilon)) / (2.0 * epsilon);
            var.set(&Tensor::from_vec(original.clone(), var.shape(), &Device::Cpu).unwrap())
                .unwrap();
            // Central differences at ε = 1e-6 carry ~1e-7 absolute rounding error in f64; a wrong
            // backward is off by percents.
            let error = (numeric - analytic[index]).abs() / numeric.abs().max(1e-2);
            assert!(
                error < 1e-5,
                "{name}[{index}]: analytic {} numeric {numeric}",
                analytic[index]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 12);
}

fn assert_every_gradient_is_nonzero(model: &Model) {
    let probe = randn(12, &[2, 9, 96], 1.0).to_dtype(DType::F32).unwrap();
    let grads = weighted_loss(model, &probe).backward().unwrap();
    assert!(!model.trainable().is_empty());
    for (name, var) in model.trainable() {
        let grad = grads
            .get(var)
            .unwrap_or_else(|| panic!("{name} received no gradient"));
        let norm = grad
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(
            norm > 0.0 && norm.is_finite(),
            "{name}: gradient norm {norm}"
        );
    }
}

#[test]
fn every_trainable_tensor_receives_a_gradient_with_lora_and_in_full_fine_tuning() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &random_weights(&config(), 8, DType::F32));
    let model = load(
        dir.path(),
        &LoadOptions {
            lora: Some(lora(4)),
            ..LoadOptions::default()
        },
        &VarMap::new(),
    );
    randomise_b(&model, 9);
    assert_every_gradient_is_nonzero(&model);
    let full = load(
        dir.path(),
        &LoadOptions {
            full_finetune: true,
            ..LoadOptions::default()
        },
        &VarMap::new(),
    );
    // Embeddings, 2 × (7 linear weights + 3 biases + 2 norms), final norm, lm_head.
    assert_eq!(full.trainable().len(), 1 + 2 * (7 + 3 + 2) + 1 + 1);
    assert_every_gradient_is_nonzero(&full);
}

/// The fused CPU ops (RMSNorm, attention probabilities, `fused.rs`) serve an f32 model; a
/// float64 model of the same weights takes the composed path. Every gradient of full fine-tuning
/// (norm weights included) agrees to f32 precision.
#[test]
fn fused_ops_in_f32_give_the_gradients_of_the_float64_composition() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &random_weights(&config(), 13, DType::F32));
    let gradients = |dtype: DType| -> Vec<(String, Tensor)> {
        let options = LoadOptions {
            dtype,
            full_finetune: true,
            ..LoadOptions::default()
        };
        let model = load(dir.path(), &options, &VarMap::new());
        let probe = randn(14, &[2, 9, 96], 1.0).to_dtype(dtype).unwrap();
        let grads = weighted_loss(&model, &probe).backward().unwrap();
        model
            .trainable()
            .iter()
            .map(|(name, var)| {
                let grad = grads.get(var).unwrap().to_dtype(DType::F32).unwrap();
                (name.clone(), grad)
            })
            .collect()
    };
    let probe_input = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
    assert!(unitforge_trainer::kernels::fused::applies(&probe_input));
    let fused = gradients(DType::F32);
    let reference = gradients(DType::F64);
    assert_eq!(fused.len(), reference.len());
    for ((name, ours), (_, expected)) in fused.iter().zip(&reference) {
        let scale = max_abs(expected).max(1e-6);
        let error = max_abs_diff(ours, expected) / scale;
        assert!(error < 1e-4, "{name}: relative error {error}");
    }
}

#[test]
fn qlora_matches_a_dense_model_of_the_dequantised_weights_and_trains_the_adapters() {
    let dir = tempfile::tempdir().unwrap();
    let weights = random_weights(&config(), 10, DType::F32);
    write_checkpoint(dir.path(), &weights);
    let varmap = VarMap::new();
    let quantized = load(
        dir.path(),
        &LoadOptions {
            lora: Some(lora(4)),
            quantize_base: true,
            ..LoadOptions::default()
        },
        &varmap,
    );

    // Reference: the same checkpoint with every layer's linear weight replaced by its NF4 round trip.
    let dequantized_dir = tempfile::tempdir().unwrap();
    let mut rounded = weights.clone();
    for (name, tensor) in rounded.iter_mut() {
        if name.starts_with("model.layers.") && name.ends_with("proj.weight") {
            *tensor = Nf4Tensor::quantize(tensor)
                .unwrap()
                .dequantize(&Device::Cpu)
                .unwrap();
        }
    }
    write_checkpoint(dequantized_dir.path(), &rounded);
    let dense = load(
        dequantized_dir.path(),
        &LoadOptions::default(),
        &VarMap::new(),
    );
    let diff = max_abs_diff(
        &quantized.forward(&ids(), 0, None, false).unwrap(),
        &dense.forward(&ids(), 0, None, false).unwrap(),
    );
    assert!(diff < 1e-5, "{diff}");
    randomise_b(&quantized, 11);
    assert_every_gradient_is_nonzero(&quantized);
}

#[test]
fn a_quantized_layer_passes_the_input_gradient_through_the_dequantised_weight() {
    let device = Device::Cpu;
    let weight = randn(13, &[6, 128], 0.3).to_dtype(DType::F32).unwrap();
    let quantized = Nf4Tensor::quantize(&weight).unwrap();
    let layer = unitforge_trainer::model::lora::Linear::new(
        unitforge_trainer::model::lora::BaseWeight::Quantized(std::sync::Arc::new(
            quantized.clone(),
        )),
        None,
    );
    let x = Var::from_tensor(&randn(14, &[3, 128], 1.0).to_dtype(DType::F32).unwrap()).unwrap();
    let y = layer.forward_t(x.as_tensor(), true).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    // d(sum y)/dx = 1ᵀ·W for every row of x.
    let expected = quantized
        .dequantize(&device)
        .unwrap()
        .sum_keepdim(0)
        .unwrap()
        .broadcast_as((3, 128))
        .unwrap();
    assert!(max_abs_diff(grads.get(&x).unwrap(), &expected) < 1e-6);
}

#[test]
fn greedy_generation_with_the_cache_matches_recomputing_the_whole_sequence() {
    use unitforge_trainer::model::generate::{generate_ids, SamplingConfig};
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &random_weights(&config(), 15, DType::F32));
    let model = load(dir.path(), &LoadOptions::default(), &VarMap::new());
    let prompt = [3u32, 17, 42, 5];
    let end = 95;
    let greedy = SamplingConfig {
        temperature: 0.0,
        max_new_tokens: 12,
        ..SamplingConfig::default()
    };
    let generated = generate_ids(&model, &prompt, 2, end, &greedy).unwrap();

    let mut sequence = prompt.to_vec();
    let mut reference = Vec::new();
    for _ in 0..12 {
        let input = Tensor::new(sequence.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = model.forward(&input, 0, None, false).unwrap();
        let last: Vec<f32> = logits
            .squeeze(0)
            .unwrap()
            .get(sequence.len() - 1)
            .unwrap()
            .to_vec1()
            .unwrap();
        let next = last
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0 as u32;
        reference.push(next);
        sequence.push(next);
        if next == end {
            break;
        }
    }
    assert_eq!(generated, vec![reference.clone(), reference]);

    let sampled = SamplingConfig {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        max_new_tokens: 8,
        seed: 5,
    };
    let a = generate_ids(&model, &prompt, 3, end, &sampled).unwrap();
    assert_eq!(
        a,
        generate_ids(&model, &prompt, 3, end, &sampled).unwrap(),
        "a seed reproduces the samples"
    );
    assert!(a.iter().all(|row| !row.is_empty() && row.len() <= 8));
    assert!(a[0] != a[1] || a[1] != a[2], "rows sample independently");
}

#[test]
fn prompts_of_different_lengths_batched_with_padding_match_each_generated_alone() {
    use unitforge_trainer::model::decoder::padding_mask;
    use unitforge_trainer::model::generate::{generate_batch, generate_ids, SamplingConfig};
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &random_weights(&config(), 16, DType::F32));
    let model = load(dir.path(), &LoadOptions::default(), &VarMap::new());
    let end = 95;
    let prompts = vec![
        vec![3u32, 17, 42, 5, 9, 11],
        vec![8u32, 1],
        vec![60u32, 61, 62, 63],
    ];

    // The masked forward of left-padded rows gives each row's unpadded logits at its positions.
    let longest = 6;
    let pads: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    let padded: Vec<u32> = prompts
        .iter()
        .zip(&pads)
        .flat_map(|(p, &pad)| std::iter::repeat_n(end, pad).chain(p.iter().copied()))
        .collect();
    let input = Tensor::from_vec(padded, (3, longest), &Device::Cpu).unwrap();
    let mask = padding_mask(&pads, longest, &Device::Cpu).unwrap();
    let batched = model
        .forward_masked(&input, 0, None, Some(&mask), false)
        .unwrap();
    for (row, prompt) in prompts.iter().enumerate() {
        let alone = model
            .forward(
                &Tensor::new(prompt.as_slice(), &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
                0,
                None,
                false,
            )
            .unwrap();
        let in_batch = batched
            .get(row)
            .unwrap()
            .narrow(0, pads[row], prompt.len())
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let diff = max_abs_diff(&in_batch, &alone);
        assert!(diff < 1e-4, "row {row}: {diff}");
    }

    // Greedy generation of the batch equals generating each prompt by itself.
    let greedy = SamplingConfig {
        temperature: 0.0,
        max_new_tokens: 10,
        ..SamplingConfig::default()
    };
    let together = generate_batch(&model, &prompts, end, &greedy).unwrap();
    for (row, prompt) in prompts.iter().enumerate() {
        let alone = generate_ids(&model, prompt, 1, end, &greedy)
            .unwrap()
            .remove(0);
        assert_eq!(together[row], alone, "row {row}");
    }
}

#[test]
fn a_step_generated_as_one_batch_gives_each_group_what_generating_it_alone_gives() {
    use unitforge_trainer::model::generate::{
        generate_groups, generate_ids, GroupRequest, SamplingConfig,
    };
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &random_weights(&config(), 21, DType::F32));
    let model = load(dir.path(), &LoadOptions::default(), &VarMap::new());
    let end = 7;
    // Prompts of two lengths (the shorter left-padded in the prefill), groups of different
    // sizes, one group of none, sampled at a high temperature so that rows end at different steps.
    let groups = vec![
        GroupRequest {
            prompt: vec![3, 17, 42, 5, 9, 11],
            samples: 4,
            seed: 11,
        },
        GroupRequest {
            prompt: vec![60, 61, 62, 63],
            samples: 3,
            seed: 12,
        },
        GroupRequest {
            prompt: vec![8, 1, 30, 2, 40, 4],
            samples: 0,
            seed: 13,
        },
        GroupRequest {
            prompt: vec![20, 21, 22, 23, 24, 25],
            samples: 5,
            seed: 14,
        },
    ];
    for (temperature, top_k, top_p) in [(1.5, 0, 1.0), (0.8, 20, 0.9), (0.0, 0, 1.0)] {
        let sampling = SamplingConfig {
            max_new_tokens: 40,
            temperature,
            top_k,
            top_p,
            seed: 0,
        };
        let mut handed_back = Vec::new();
        generate_groups(&model, &groups, end, &sampling, &mut |g, ids, _| {
            handed_back.push((g, ids));
            Ok(())
        })
        .unwrap();
        let order: Vec<usize> = handed_back.iter().map(|(g, _)| *g).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            vec![0, 1, 3],
            "each non-empty group once (T = {temperature})"
        );
        for (g, ids) in &handed_back {
            let request = &groups[*g];
            let alone = generate_ids(
                &model,
                &request.prompt,
                request.samples,
                end,
                &SamplingConfig {
                    seed: request.seed,
                    ..sampling.clone()
                },
            )
            .unwrap();
            assert_eq!(ids, &alone, "group {g} at T = {temperature}");
        }
        if temperature == 1.5 {
            let lengths: Vec<usize> = handed_back
                .iter()
                .flat_map(|(_, ids)| ids.iter().map(Vec::len))
                .collect();
            assert!(
                lengths.iter().any(|&l| l < 40) && lengths.contains(&40),
                "some rows must end early and leave the batch, others run to the limit: {lengths:?}"
            );
            // A group whose rows all ended early is handed back before the last group ends.
            let last_longest = handed_back.last().unwrap().1.iter().map(Vec::len).max();
            assert_eq!(
                last_longest,
                Some(40),
                "the last group handed back is one that ran longest"
            );
        }
    }
}

/// Every trainable gradient of a model loaded with `options`, in float64, from
/// `unitforge_trainer::model::recompute::backward` (which a checkpointed model needs), with the number
/// of nodes autograd's graph holds at the loss.
fn gradients_and_graph_size(dir: &Path, options: &LoadOptions) -> (Vec<(String, Tensor)>, usize) {
    let model = load(dir, options, &VarMap::new());
    randomise_b(&model, 16);
    let probe = randn(17, &[2, 9, 96], 1.0).to_dtype(options.dtype).unwrap();
    let logits = model.forward(&ids(), 0, None, true).unwrap();
    let loss = (logits * probe).unwrap().sum_all().unwrap();
    let nodes = loss.sorted_nodes().len();
    let grads = unitforge_trainer::model::recompute::backward(&loss).unwrap();
    let named = model
        .trainable()
        .iter()
        .map(|(name, var)| {
            let grad = grads
                .get(var)
                .unwrap_or_else(|| panic!("{name} received no gradient"));
            (name.clone(), grad.to_dtype(DType::F64).unwrap())
        })
        .collect();
    (named, nodes)
}

/// Activation checkpointing recomputes each layer in the backward: the gradients are those of
/// the plain backward (float64, so any difference is a wrong gradient, not rounding), with LoRA
/// and in full fine-tuning (norm weights included), and the graph kept to the backward is a
/// fraction of the plain one.
#[test]
fn gradient_checkpointing_gives_the_plain_gradients_from_a_smaller_graph() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &random_weights(&config(), 15, DType::F64));
    for (what, base) in [
        (
            "LoRA",
            LoadOptions {
                dtype: DType::F64,
                lora: Some(lora(4)),
                ..LoadOptions::default()
            },
        ),
        (
            "full fine-tuning",
            LoadOptions {
                dtype: DType::F64,
                full_finetune: true,
                ..LoadOptions::default()
            },
        ),
    ] {
        let (plain, plain_nodes) = gradients_and_graph_size(dir.path(), &base);
        let checkpointed = LoadOptions {
            gradient_checkpointing: true,
            ..base.clone()
        };
        let (ours, nodes) = gradients_and_graph_size(dir.path(), &checkpointed);
        assert_eq!(ours.len(), plain.len());
        for ((name, ours), (_, expected)) in ours.iter().zip(&plain) {
            let scale = max_abs(expected).max(1e-12);
            let error = max_abs_diff(ours, expected) / scale;
            assert!(error < 1e-12, "{what}, {name}: relative error {error}");
        }
        assert!(
            nodes * 3 < plain_nodes,
            "{what}: {nodes} graph nodes with checkpointing, {plain_nodes} without"
        );
    }
}

#[test]
fn gradient_checkpointing_refuses_lora_dropout() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &random_weights(&config(), 18, DType::F32));
    let options = LoadOptions {
        lora: Some(unitforge_trainer::model::lora::LoraConfig {
            dropout: 0.1,
            ..lora(4)
        }),
        gradient_checkpointing: true,
        ..LoadOptions::default()
    };
    let error = Model::load(dir.path(), &Device::Cpu, &options, &VarMap::new())
        .err()
        .expect("dropout with checkpointing must be refused")
        .to_string();
    assert!(error.contains("lora.dropout"), "{error}");
}

/// `Model::target_logprobs` takes the chunked output-head op under LoRA (a frozen head, f32 on
/// the CPU) and the logits elsewhere: values and LoRA gradients equal those of the logits path,
/// the base-only pass (GRPO's reference) included.
#[test]
fn target_logprobs_from_the_hidden_states_equal_the_logits_path() {
    use unitforge_trainer::model::logprobs::chosen_logprobs;
    use unitforge_trainer::model::lora::Pass;
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &random_weights(&config(), 19, DType::F32));
    let options = LoadOptions {
        lora: Some(lora(4)),
        ..LoadOptions::default()
    };
    let model = load(dir.path(), &options, &VarMap::new());
    randomise_b(&model, 20);
    let targets = ids().narrow(1, 1, 8).unwrap();
    let inputs = ids().narrow(1, 0, 8).unwrap();
    let weights = randn(21, &[2, 8], 1.0).to_dtype(DType::F32).unwrap();
    let run = |chunked: bool| {
        let logp = unitforge_trainer::kernels::fused::with_enabled(true, || {
            if chunked {
                model.target_logprobs(&inputs, &targets, 0.9, Pass::Train)
            } else {
                let logits = model.forward(&inputs, 0, None, true)?;
                chosen_logprobs(&logits, &targets, 0.9)
            }
        })
        .unwrap();
        // The chunked path keeps no vocabulary-sized tensor for the backward.
        let logit_sized = logp
            .sorted_nodes()
            .iter()
            .filter(|t| t.dims().last() == Some(&96))
            .count();
        assert_eq!(logit_sized == 0, chunked, "{logit_sized} logit-sized nodes");
        let grads = (&logp * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let lora_grads: Vec<Tensor> = model
            .trainable()
            .iter()
            .map(|(_, var)| grads.get(var).unwrap().clone())
            .collect();
        (logp, lora_grads)
    };
    let (ours, our_grads) = run(true);
    let (expected, expected_grads) = run(false);
    assert!(max_abs_diff(&ours, &expected) < 1e-5);
    for (a, b) in our_grads.iter().zip(&expected_grads) {
        assert!(max_abs_diff(a, b) <= 1e-4 * max_abs(b).max(1e-3));
    }
    let base = model
        .target_logprobs(&inputs, &targets, 1.0, Pass::BaseOnly)
        .unwrap();
    let base_logits = model.forward_without_adapters(&inputs, None).unwrap();
    let expected = chosen_logprobs(&base_logits, &targets, 1.0).unwrap();
    assert!(max_abs_diff(&base, &expected) < 1e-5);
}
