//! `init_model` writes a checkpoint that the same loading code as a real one reads.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use unitforge_trainer::model::decoder::{LoadOptions, Model};
use unitforge_trainer::new_model::init::{init_model, read_init_config};

#[test]
fn the_tiny_model_initialises_loads_and_runs() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut config = read_init_config(&root.join("configs/model_tiny.yaml")).unwrap();
    config.tokenizer.corpus = vec![root.join("data/pairs")];
    let out = tempfile::tempdir().unwrap();
    let summary = init_model(&config, out.path()).unwrap();
    assert!(summary.corpus_files >= 60, "{summary:?}");
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(out.path().join(file).is_file(), "{file}");
    }
    let model = Model::load(
        out.path(),
        &Device::Cpu,
        &LoadOptions::default(),
        &VarMap::new(),
    )
    .unwrap();
    assert_eq!(model.config().vocab_size, summary.vocab_size);
    let tokenizer =
        unitforge_trainer::data::tokenizer::load(&out.path().join("tokenizer.json")).unwrap();
    assert_eq!(tokenizer.get_vocab_size(true), summary.vocab_size);
    let ids = tokenizer
        .encode("def test_add():\n    assert add(1, 2) == 3\n", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = model.forward(&input, 0, None, false).unwrap();
    assert_eq!(logits.dims(), &[1, ids.len(), summary.vocab_size]);
    // A freshly initialised model (std 0.02) is close to uniform: its next-token loss is near
    // ln(vocab).
    let log_probs = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let nll: f32 = ids[1..]
        .iter()
        .enumerate()
        .map(|(position, &next)| {
            -log_probs
                .get(position)
                .unwrap()
                .get(next as usize)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        })
        .sum::<f32>()
        / (ids.len() - 1) as f32;
    let uniform = (summary.vocab_size as f32).ln();
    assert!(
        (nll - uniform).abs() < 0.5,
        "loss {nll} vs ln(vocab) {uniform}"
    );
    // Same seed, same weights.
    let again = tempfile::tempdir().unwrap();
    init_model(&config, again.path()).unwrap();
    assert_eq!(
        std::fs::read(out.path().join("model.safetensors")).unwrap(),
        std::fs::read(again.path().join("model.safetensors")).unwrap()
    );
}
