//! The real pretrained model, SmolLM2-135M-Instruct, imported from its GGUF file: the tokenizer
//! against llama.cpp's own (golden ids in `fixtures/smollm2_tokens.json`, written by
//! `scripts/tokenizer-golden.py`), the logits against candle-transformers' `quantized_llama`
//! reading the same GGUF (an independent implementation with llama.cpp's rotary layout), the
//! chat template, and a layer-pruned student.
//!
//! Needs `models/SmolLM2-135M-Instruct.Q4_1.gguf`: `make model` (which `make test` runs) fetches
//! it once.

mod common;

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::quantized::gguf_file::{self, Content};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use common::max_abs_diff;
use unitforge_trainer::data::prompts::IM_END;
use unitforge_trainer::data::prompts::{render_messages, PromptFormat};
use unitforge_trainer::data::tokenizer::ModelTokenizer;
use unitforge_trainer::model::decoder::Model;
use unitforge_trainer::model::generate::{generate_batch, SamplingConfig};
use unitforge_trainer::new_model::gguf_import::import_gguf;

fn gguf() -> PathBuf {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: `make model` (scripts/get-model.sh) downloads it",
        path.display()
    );
    path
}

/// The GGUF imported once for every test of this binary.
fn imported() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("smollm2");
        let summary = import_gguf(&gguf(), &out, DType::F32).unwrap();
        assert_eq!(summary.layers, 30);
        assert_eq!(summary.vocab_size, 49_152);
        assert!(summary.tied_embeddings);
        (dir, out)
    })
    .1
}

#[test]
fn the_tokenizer_matches_llama_cpp_on_the_golden_strings() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/smollm2_tokens.json")).unwrap();
    let text = ModelTokenizer::load(imported()).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for case in cases {
        let input = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = text
            .tokenizer
            .encode(input, false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(got, want, "{input:?}");
        // And back: the ids decode to the text.
        assert_eq!(text.tokenizer.decode(&got, false).unwrap(), input);
    }
}

#[test]
fn prompts_use_the_chat_template_and_answers_end_at_im_end() {
    let text = ModelTokenizer::load(imported()).unwrap();
    assert!(matches!(text.format, PromptFormat::Template(_)));
    assert_eq!(
        text.end_id,
        text.tokenizer.token_to_id(IM_END).unwrap(),
        "an instruct model's turn ends at <|im_end|>"
    );
    let rendered = render_messages("be brief", "hello", &text.format);
    assert_eq!(
        rendered,
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    );
}

/// The GGUF with every tensor dequantised to F32 (same names, same llama.cpp layout), so
/// `quantized_llama` computes in full precision.
fn dequantised_gguf() -> Vec<u8> {
    let mut file = std::fs::File::open(gguf()).unwrap();
    let content = Content::read(&mut file).unwrap();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let tensors: Vec<(String, QTensor)> = names
        .iter()
        .map(|name| {
            let q = content.tensor(&mut file, name, &Device::Cpu).unwrap();
            let dense = q.dequantize(&Device::Cpu).unwrap();
            (
                name.to_string(),
                QTensor::quantize(&dense, GgmlDType::F32).unwrap(),
            )
        })
        .collect();
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut bytes = Cursor::new(Vec::new());
    gguf_file::write(&mut bytes, &metadata, &refs).unwrap();
    bytes.into_inner()
}

fn reference(bytes: Vec<u8>) -> ModelWeights {
    let mut reader = Cursor::new(bytes);
    let content = Content::read(&mut reader).unwrap();
    ModelWeights::from_gguf(content, &mut reader, &Device::Cpu).unwrap()
}

/// Greedy continuation of `prompt` by `quantized_llama`, token by token with its cache.
fn reference_greedy(model: &mut ModelWeights, prompt: &[u32], steps: usize) -> Vec<u32> {
    let mut out = Vec::new();
    let mut input = prompt.to_vec();
    let mut position = 0;
    for _ in 0..steps {
        let ids = Tensor::new(input.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = model.forward(&ids, position).unwrap().squeeze(0).unwrap();
        position += input.len();
        let next = logits.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        out.push(next);
        input = vec![next];
    }
    out
}

#[test]
fn logits_and_greedy_continuations_match_candle_transformers_quantized_llama() {
    let text = ModelTokenizer::load(imported()).unwrap();
    let ours = Model::load_for_inference(imported(), None, &Device::Cpu).unwrap();
    let prompts = [
        "def add(a, b):\n    return a + b\n\n\ndef test_add():\n    assert add(",
        "<|im_start|>user\nWrite a pytest test for a function that reverses a list.<|im_end|>\n<|im_start|>assistant\n",
    ];
    let mut dense = reference(dequantised_gguf());
    for prompt in prompts {
        let ids = text
            .tokenizer
            .encode(prompt, false)
            .unwrap()
            .get_ids()
            .to_vec();
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = ours.forward(&input, 0, None, false).unwrap();
        let last = logits
            .narrow(1, ids.len() - 1, 1)
            .unwrap()
            .squeeze(1)
            .unwrap();
        dense.clear_kv_cache();
        let theirs = dense.forward(&input, 0).unwrap();
        // Same weights, two implementations (theirs rotates adjacent pairs on llama.cpp's row
        // order, ours the two halves on Hugging Face's): f32 rounding apart, the same logits.
        let scale = common::max_abs(&theirs);
        let diff = max_abs_diff(&last, &theirs);
        assert!(
            diff < 1e-3 * scale.max(1.0),
            "{prompt:?}: max |ours − quantized_llama| = {diff} (logits up to {scale})"
        );
        // Greedy continuations agree token for token.
        let greedy = SamplingConfig {
            max_new_tokens: 8,
            temperature: 0.0,
            ..SamplingConfig::default()
        };
        let mine = generate_batch(&ours, std::slice::from_ref(&ids), u32::MAX, &greedy).unwrap();
        dense.clear_kv_cache();
        assert_eq!(mine[0], reference_greedy(&mut dense, &ids, 8), "{prompt:?}");
    }
    // On the 4-bit file itself (its matmuls quantise the activations too), the first greedy
    // tokens still agree.
    let mut quantized = reference(std::fs::read(gguf()).unwrap());
    let ids = text
        .tokenizer
        .encode(prompts[0], false)
        .unwrap()
        .get_ids()
        .to_vec();
    let greedy = SamplingConfig {
        max_new_tokens: 3,
        temperature: 0.0,
        ..SamplingConfig::default()
    };
    let mine = generate_batch(&ours, std::slice::from_ref(&ids), u32::MAX, &greedy).unwrap();
    assert_eq!(mine[0], reference_greedy(&mut quantized, &ids, 3));
}

#[test]
fn a_layer_pruned_student_keeps_the_teachers_vocabulary_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let student = dir.path().join("student");
    let summary =
        unitforge_trainer::new_model::prune::prune_layers(imported(), 10, &student).unwrap();
    assert_eq!(summary.kept_layers, [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]);
    let teacher_weights =
        candle_core::safetensors::load(imported().join("model.safetensors"), &Device::Cpu).unwrap();
    let student_weights =
        candle_core::safetensors::load(student.join("model.safetensors"), &Device::Cpu).unwrap();
    // Student layer 3 is teacher layer 10, exactly.
    let name = |layer: usize| format!("model.layers.{layer}.mlp.down_proj.weight");
    assert_eq!(
        max_abs_diff(&student_weights[&name(3)], &teacher_weights[&name(10)]),
        0.0
    );
    assert!(!student_weights.contains_key(&name(10)));
    let text = ModelTokenizer::load(&student).unwrap();
    assert!(matches!(text.format, PromptFormat::Template(_)));
    let model = Model::load_for_inference(&student, None, &Device::Cpu).unwrap();
    assert_eq!(model.config().num_hidden_layers, 10);
    let ids = Tensor::new(&[[1u32, 9, 77, 2]], &Device::Cpu).unwrap();
    let logits = model.forward(&ids, 0, None, false).unwrap();
    assert_eq!(logits.dims(), [1, 4, 49_152]);
    assert!(common::max_abs(&logits).is_finite());
}
