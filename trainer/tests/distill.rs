//! Stage 2 on tiny models: an SFT-trained teacher distilled into a smaller student online (JSD
//! and RKL fall, metrics carry every part), on the student's own samples, from a 4-bit teacher,
//! and offline from precomputed `teacher_logprobs` that line up with the online teacher's; and
//! the clear refusals (other vocabulary, no teacher at all, on-policy without a teacher).

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use common::max_abs_diff;
use unitforge_trainer::data::dataset::{load_jsonl, Collator, Targets};
use unitforge_trainer::data::tokenizer::{self, ModelTokenizer};
use unitforge_trainer::model::decoder::Model;
use unitforge_trainer::model::logprobs::chosen_logprobs;
use unitforge_trainer::new_model::init::{init_model, read_init_config};
use unitforge_trainer::stages::distill::teacher_logprobs;
use unitforge_trainer::train::stage_config::StageConfig;
use unitforge_trainer::train::train_loop::read_metrics;

fn root() -> PathBuf {
    common::repo_root()
}

/// A student (32 wide) and a teacher (64 wide) sharing the student's tokenizer, and 24 + 8 rows
/// of the shipped corpus.
fn setup(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let (student, train, eval, mut init) = common::small_student(dir, 24, 8);
    init.tokenizer.from = Some(student.join("tokenizer.json"));
    init.hidden_size = 64;
    init.intermediate_size = 128;
    init.seed = 7;
    let teacher_base = dir.join("teacher-base");
    init_model(&init, &teacher_base).unwrap();
    // The teacher learns the data first, so it has something to teach.
    let teacher = dir.join("teacher");
    let mut sft = config(&teacher_base, &train, &eval, &teacher, 30);
    sft.teacher_model = None;
    sft.learning_rate = 0.01;
    unitforge_trainer::stages::sft::train(&sft, &Device::Cpu).unwrap();
    (student, teacher, train, eval)
}

fn config(model: &Path, train: &Path, eval: &Path, out: &Path, steps: usize) -> StageConfig {
    let yaml = format!(
        "base_model: {}\noutput_dir: {}\ntrain_data: {}\neval_data: {}\nmax_steps: {steps}\nbatch_size: 4\nlearning_rate: 0.005\nwarmup_steps: 2\nmax_len: 160\neval_every: 10\nsave_every: 100\nprogress: false\nfull_finetune: true\ndistill: {{jsd_weight: 1.0, rkl_weight: 0.5, beta: 0.5, temperature: 1.0, sampling: {{max_new_tokens: 12}}}}\n",
        model.display(),
        out.display(),
        train.display(),
        eval.display()
    );
    serde_yaml_ng::from_str(&yaml).unwrap()
}

#[test]
fn online_offline_on_policy_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (student, teacher, train, eval) = setup(dir.path());
    let device = Device::Cpu;

    // Online: the student moves toward the teacher.
    let online = dir.path().join("online");
    let mut cfg = config(&student, &train, &eval, &online, 30);
    cfg.teacher_model = Some(teacher.clone());
    let summary = unitforge_trainer::stages::distill::train(&cfg, &device).unwrap();
    let (first, last) = (&summary.first_eval, &summary.final_eval);
    assert!(last["eval_jsd"] < 0.7 * first["eval_jsd"], "{summary:?}");
    assert!(last["eval_rkl"] < first["eval_rkl"], "{summary:?}");
    assert!(
        last["teacher_top1_agreement"] > first["teacher_top1_agreement"],
        "{summary:?}"
    );
    let metrics = read_metrics(&online.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.len(), 30);
    for m in &metrics {
        for key in ["ce", "jsd", "rkl"] {
            assert!(m.parts[key].is_finite(), "step {}: {key}", m.step);
        }
        assert_eq!(
            m.parts.contains_key("teacher_top1_agreement"),
            m.parts.contains_key("eval_loss")
        );
    }
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "loss_curve.png",
    ] {
        assert!(online.join(file).is_file(), "{file}");
    }

    // On-policy: every batch on the student's samples, scored by a 4-bit teacher.
    let on_policy = dir.path().join("on-policy");
    let mut cfg = config(&student, &train, &eval, &on_policy, 2);
    cfg.teacher_model = Some(teacher.clone());
    cfg.distill.on_policy_fraction = 1.0;
    cfg.distill.quantize_teacher = true;
    unitforge_trainer::stages::distill::train(&cfg, &device).unwrap();
    let metrics = read_metrics(&on_policy.join("metrics.jsonl")).unwrap();
    assert!(metrics
        .iter()
        .all(|m| m.parts["on_policy"] == 1.0 && m.loss.is_finite()));

    // Offline: teacher_logprobs line up with what the online teacher computes.
    let offline_data = dir.path().join("train-with-teacher.jsonl");
    let written = teacher_logprobs(&teacher, &train, &offline_data, 160, &device).unwrap();
    assert_eq!(written.rows, 24);
    assert!(written.mean_logprob < 0.0);
    let text = ModelTokenizer::load(&teacher).unwrap();
    let end = tokenizer::token_id(&text.tokenizer, tokenizer::END_OF_TEXT).unwrap();
    assert_eq!(
        text.end_id, end,
        "no tokenizer_config.json: <|endoftext|> ends an answer"
    );
    let examples = load_jsonl(&offline_data, &text.format, Targets::Required).unwrap();
    let batch = Collator::new(text.tokenizer, 160, end, end)
        .collate(&examples.iter().take(3).collect::<Vec<_>>(), &device)
        .unwrap();
    let teacher_model = Model::load_for_inference(&teacher, None, &device).unwrap();
    let logits = teacher_model
        .forward(&batch.input_ids, 0, None, false)
        .unwrap();
    let direct = chosen_logprobs(&logits, &batch.targets, 1.0).unwrap();
    let stored = batch.teacher_logprobs.clone().unwrap();
    let mask = batch.mask.to_dtype(DType::F32).unwrap();
    let gap = max_abs_diff(&(direct * &mask).unwrap(), &(stored * &mask).unwrap());
    assert!(gap < 1e-4, "stored vs recomputed teacher log-probs: {gap}");
    let offline = dir.path().join("offline");
    let mut cfg = config(&student, &offline_data, &eval, &offline, 3);
    cfg.teacher_model = None;
    unitforge_trainer::stages::distill::train(&cfg, &device).unwrap();
    let metrics = read_metrics(&offline.join("metrics.jsonl")).unwrap();
    assert!(metrics
        .iter()
        .all(|m| m.parts["rkl"].is_finite() && !m.parts.contains_key("jsd")));

    // Refusals, each naming its cause.
    let err = |cfg: &StageConfig| {
        unitforge_trainer::stages::distill::train(cfg, &device)
            .unwrap_err()
            .to_string()
    };
    let mut other = read_init_config(&root().join("configs/model_tiny.yaml")).unwrap();
    other.tokenizer.corpus = vec![eval.clone()];
    other.tokenizer.vocab_size = 300;
    other.hidden_size = 32;
    other.intermediate_size = 64;
    other.num_hidden_layers = 1;
    let stranger = dir.path().join("stranger");
    init_model(&other, &stranger).unwrap();
    let mut cfg = config(&student, &train, &eval, &dir.path().join("x"), 1);
    cfg.teacher_model = Some(stranger);
    assert!(err(&cfg).contains("vocabulary"), "{}", err(&cfg));
    cfg.teacher_model = None;
    assert!(err(&cfg).contains("teacher_logprobs"), "{}", err(&cfg));
    let mut cfg = config(&student, &offline_data, &eval, &dir.path().join("y"), 1);
    cfg.teacher_model = None;
    cfg.distill.on_policy_fraction = 0.5;
    assert!(err(&cfg).contains("on_policy_fraction"), "{}", err(&cfg));
    let mut cfg = config(&student, &train, &eval, &dir.path().join("z"), 1);
    cfg.teacher_model = Some(teacher);
    cfg.distill.beta = 1.5;
    assert!(err(&cfg).contains("beta"), "{}", err(&cfg));
    // SFT refuses a teacher rather than silently ignoring it.
    assert!(unitforge_trainer::stages::sft::train(&cfg, &device)
        .unwrap_err()
        .to_string()
        .contains("teacher_model"));
}
