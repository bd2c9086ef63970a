//! Stage 2, GKD distillation: pull the student (the SFT output) toward a teacher's next-token
//! distributions, on the same data format.
//!
//! loss = ce_weight·CE + jsd_weight·JSD_β + rkl_weight·RKL, at `temperature` (docs/distillation.md).
//! The teacher is either online — another checkpoint, frozen, optionally 4-bit, possibly larger,
//! with the student's vocabulary — or offline, the data's `teacher_logprobs` (written by
//! `unitforge teacher-logprobs`); offline, RKL switches to its chosen-token estimate and the JSD,
//! which needs the teacher's whole distribution, is unavailable. With an online teacher,
//! `on_policy_fraction` of the micro-batches (GKD's λ) use completions the student samples itself,
//! scored by the teacher; their cross-entropy is not counted (it would train on the student's own
//! samples).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;
use unitforge_sandbox::rng::SplitMix64;

use crate::data::{parse_jsonl, Batch, Collator, Example};
use crate::generate::{generate_batch, SamplingConfig};
use crate::loss::{
    chosen_logprobs, jsd_loss, masked_cross_entropy, reverse_kl_on_chosen, reverse_kl_on_logits,
    top1_agreement,
};
use crate::model::{LoadOptions, Model};
use crate::train_loop::{
    held_out, load_student, parse_dtype, run, Evaluation, MicroLoss, Stage, StageConfig,
    StageSummary,
};
use crate::TrainerError;

/// The `distill:` section of a stage config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DistillSettings {
    pub ce_weight: f64,
    pub jsd_weight: f64,
    pub rkl_weight: f64,
    /// JSD interpolation: 0 = forward KL(T‖S), 0.5 = symmetric JSD, 1 = reverse KL(S‖T).
    pub beta: f64,
    pub temperature: f64,
    /// Share of micro-batches whose targets the student samples itself (online teacher only).
    pub on_policy_fraction: f64,
    /// Store the online teacher's weights 4-bit (NF4).
    pub quantize_teacher: bool,
    /// How on-policy completions are sampled.
    pub sampling: SamplingConfig,
}

impl Default for DistillSettings {
    fn default() -> Self {
        Self {
            ce_weight: 1.0,
            jsd_weight: 1.0,
            rkl_weight: 0.0,
            beta: 0.5,
            temperature: 1.0,
            on_policy_fraction: 0.0,
            quantize_teacher: false,
            sampling: SamplingConfig {
                max_new_tokens: 128,
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed: 0,
            },
        }
    }
}

impl DistillSettings {
    fn validate(&self) -> Result<(), TrainerError> {
        let bad = |what: String| Err(TrainerError::Config(format!("distill.{what}")));
        if !(0.0..=1.0).contains(&self.beta) {
            return bad(format!("beta = {}: must lie in [0, 1]", self.beta));
        }
        if !(0.0..=1.0).contains(&self.on_policy_fraction) {
            return bad(format!(
                "on_policy_fraction = {}: must lie in [0, 1]",
                self.on_policy_fraction
            ));
        }
        if self.temperature <= 0.0 {
            return bad(format!(
                "temperature = {}: must be positive",
                self.temperature
            ));
        }
        if [self.ce_weight, self.jsd_weight, self.rkl_weight]
            .iter()
            .any(|w| *w < 0.0)
        {
            return bad("*_weight: weights must not be negative".into());
        }
        Ok(())
    }
}

/// The vocabulary as token → id, for comparing tokenizers.
fn vocabulary(tokenizer: &Tokenizer) -> BTreeMap<String, u32> {
    tokenizer.get_vocab(true).into_iter().collect()
}

/// Load a frozen teacher for `student`'s tokenizer; refuse one whose vocabulary differs.
pub fn load_teacher(
    dir: &Path,
    student_tokenizer: &Tokenizer,
    student_vocab_size: usize,
    dtype: DType,
    quantize: bool,
    device: &Device,
) -> Result<Model, TrainerError> {
    let teacher_tokenizer = crate::tokenizer::load(&dir.join("tokenizer.json"))?;
    let (ours, theirs) = (
        vocabulary(student_tokenizer),
        vocabulary(&teacher_tokenizer),
    );
    if ours != theirs {
        let differing = ours
            .iter()
            .find(|(token, id)| theirs.get(*token) != Some(*id))
            .map(|(token, _)| token.clone())
            .or_else(|| theirs.keys().find(|t| !ours.contains_key(*t)).cloned())
            .unwrap_or_default();
        return Err(TrainerError::Config(format!(
            "the teacher {} does not share the student's vocabulary ({} vs {} tokens; first difference at {differing:?}); distillation compares distributions token by token, so both must use the same tokenizer",
            dir.display(),
            theirs.len(),
            ours.len()
        )));
    }
    let options = LoadOptions {
        dtype,
        lora: None,
        quantize_base: quantize,
        full_finetune: false,
        seed: 0,
    };
    let teacher = Model::load(dir, device, &options, &VarMap::new())?;
    if teacher.config().vocab_size != student_vocab_size {
        return Err(TrainerError::Config(format!(
            "the teacher's output layer has {} entries, the student's {}",
            teacher.config().vocab_size,
            student_vocab_size
        )));
    }
    Ok(teacher)
}

/// Replace each example's target with a completion the student samples for its prompt; the
/// prompts are sampled together as one batch.
fn sample_targets(
    model: &Model,
    collator: &Collator,
    examples: &[Example],
    end_id: u32,
    sampling: &SamplingConfig,
    rng: &mut SplitMix64,
) -> Result<Vec<Example>, TrainerError> {
    let prompts = examples
        .iter()
        .map(|example| Ok(collator.tokenize(example)?.0))
        .collect::<Result<Vec<_>, TrainerError>>()?;
    let config = SamplingConfig {
        seed: rng.next_u64(),
        ..sampling.clone()
    };
    let completions = generate_batch(model, &prompts, end_id, &config)?;
    examples
        .iter()
        .zip(completions)
        .map(|(example, ids)| {
            let ids: Vec<u32> = ids.into_iter().take_while(|&t| t != end_id).collect();
            let text = collator
                .tokenizer()
                .decode(&ids, false)
                .map_err(|e| TrainerError::Data(e.to_string()))?;
            Ok(Example {
                target: text,
                teacher_logprobs: None,
                ..example.clone()
            })
        })
        .collect()
}

/// The divergence terms of one batch, each `None` where it cannot be computed.
struct Divergences {
    jsd: Option<Tensor>,
    rkl: Option<Tensor>,
    teacher_logits: Option<Tensor>,
}

fn divergences(
    student_logits: &Tensor,
    batch: &Batch,
    teacher: Option<&Model>,
    settings: &DistillSettings,
) -> Result<Divergences, TrainerError> {
    match teacher {
        Some(teacher) => {
            let teacher_logits = teacher.forward(&batch.input_ids, 0, None, false)?.detach();
            let t = settings.temperature;
            Ok(Divergences {
                jsd: Some(jsd_loss(
                    student_logits,
                    &teacher_logits,
                    &batch.mask,
                    settings.beta,
                    t,
                )?),
                rkl: Some(reverse_kl_on_logits(
                    student_logits,
                    &teacher_logits,
                    &batch.mask,
                    t,
                )?),
                teacher_logits: Some(teacher_logits),
            })
        }
        None => {
            let rkl = match &batch.teacher_logprobs {
                Some(lp) => Some(reverse_kl_on_chosen(
                    student_logits,
                    &batch.targets,
                    lp,
                    &batch.mask,
                    settings.temperature,
                )?),
                None => None,
            };
            Ok(Divergences {
                jsd: None,
                rkl,
                teacher_logits: None,
            })
        }
    }
}

fn scalar(t: &Tensor) -> Result<f64, TrainerError> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Run stage 2.
pub fn train(config: &StageConfig, device: &Device) -> Result<StageSummary, TrainerError> {
    let settings = &config.distill;
    settings.validate()?;
    let student = load_student(config, device)?;
    let (model, collator) = (&student.model, &student.collator);
    let teacher = match &config.teacher_model {
        Some(dir) => Some(load_teacher(
            dir,
            &student.tokenizer,
            model.config().vocab_size,
            crate::device::usable_dtype(device, parse_dtype(&config.dtype)?),
            settings.quantize_teacher,
            device,
        )?),
        None => {
            if let Some(index) = student
                .train_set
                .iter()
                .position(|e| e.teacher_logprobs.is_none())
            {
                return Err(TrainerError::Config(format!(
                    "no teacher_model, and training row {} of {} has no teacher_logprobs (compute them with `unitforge teacher-logprobs`)",
                    index + 1,
                    config.train_data.display()
                )));
            }
            if settings.on_policy_fraction > 0.0 {
                return Err(TrainerError::Config(
                    "distill.on_policy_fraction > 0 needs an online teacher_model to score the student's samples".into(),
                ));
            }
            if settings.jsd_weight > 0.0 {
                tracing::warn!("offline teacher (teacher_logprobs only): the JSD term needs whole distributions and is skipped; RKL uses its chosen-token estimate");
            }
            None
        }
    };
    let teacher = teacher.as_ref();

    let mut micro_loss = |examples: &[Example], rng: &mut SplitMix64| {
        let on_policy = teacher.is_some() && rng.uniform() < settings.on_policy_fraction;
        let sampled;
        let examples = if on_policy {
            sampled = sample_targets(
                model,
                collator,
                examples,
                student.end_id,
                &settings.sampling,
                rng,
            )?;
            &sampled[..]
        } else {
            examples
        };
        let batch = collator.collate(&examples.iter().collect::<Vec<_>>(), device)?;
        let logits = model.forward(&batch.input_ids, 0, None, true)?;
        let ce = masked_cross_entropy(&logits, &batch.targets, &batch.mask)?;
        let Divergences { jsd, rkl, .. } = divergences(&logits, &batch, teacher, settings)?;
        let mut parts = vec![
            ("ce", scalar(&ce)?),
            ("on_policy", f64::from(u8::from(on_policy))),
        ];
        let ce_weight = if on_policy { 0.0 } else { settings.ce_weight };
        let mut loss = (ce * ce_weight)?;
        if let Some(jsd) = jsd {
            parts.push(("jsd", scalar(&jsd)?));
            loss = (loss + (jsd * settings.jsd_weight)?)?;
        }
        if let Some(rkl) = rkl {
            parts.push(("rkl", scalar(&rkl)?));
            loss = (loss + (rkl * settings.rkl_weight)?)?;
        }
        Ok(MicroLoss {
            loss,
            tokens: batch.target_tokens,
            parts,
        })
    };
    let mut evaluate = || {
        evaluate(
            model,
            collator,
            &student.eval_set,
            teacher,
            settings,
            config.batch_size,
            config.eval_batches,
        )
    };
    run(
        Stage {
            name: "distill",
            config,
            model,
            tokenizer: &student.tokenizer,
            train_set: &student.train_set,
        },
        &mut micro_loss,
        &mut evaluate,
    )
}

/// Held-out CE (the loss stages compare), and with a teacher the held-out JSD, RKL and top-1
/// agreement; offline, the chosen-token RKL where the rows carry `teacher_logprobs`. Each is a
/// mean per target token.
pub fn evaluate(
    model: &Model,
    collator: &Collator,
    examples: &[Example],
    teacher: Option<&Model>,
    settings: &DistillSettings,
    batch_size: usize,
    limit: usize,
) -> Result<Evaluation, TrainerError> {
    held_out(
        model,
        collator,
        examples,
        batch_size,
        limit,
        &mut |batch, logits| {
            let Divergences {
                jsd,
                rkl,
                teacher_logits,
            } = divergences(logits, batch, teacher, settings)?;
            let mut parts = Vec::new();
            if let Some(jsd) = jsd {
                parts.push(("eval_jsd", scalar(&jsd)?));
            }
            if let Some(rkl) = rkl {
                parts.push(("eval_rkl", scalar(&rkl)?));
            }
            if let Some(t) = teacher_logits {
                parts.push((
                    "teacher_top1_agreement",
                    top1_agreement(logits, &t, &batch.mask)?,
                ));
            }
            Ok(parts)
        },
    )
}

/// Summary of `teacher_logprobs`.
#[derive(Debug, Clone, Serialize)]
pub struct TeacherLogprobsSummary {
    pub rows: usize,
    pub tokens: usize,
    /// Mean log-prob per target token: the teacher's fit to the data.
    pub mean_logprob: f64,
}

/// Add `teacher_logprobs` (the teacher's log-prob of each target token, end token included) to
/// every row of `data`, keeping the rows' other fields as they are, and write them to `out`.
pub fn teacher_logprobs(
    teacher_dir: &Path,
    data: &Path,
    out: &Path,
    max_len: usize,
    device: &Device,
) -> Result<TeacherLogprobsSummary, TrainerError> {
    let tokenizer = crate::tokenizer::load(&teacher_dir.join("tokenizer.json"))?;
    let end_id = crate::tokenizer::end_token(&tokenizer)?;
    let teacher = Model::load_for_inference(teacher_dir, None, device)?;
    let text = std::fs::read_to_string(data)
        .map_err(|e| TrainerError::Io(data.display().to_string(), e))?;
    let examples = parse_jsonl(&text, data, Some(&tokenizer))?;
    let rows: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let collator = Collator::new(tokenizer, max_len, end_id, end_id);
    let mut file =
        std::fs::File::create(out).map_err(|e| TrainerError::Io(out.display().to_string(), e))?;
    let (mut tokens, mut total) = (0usize, 0.0f64);
    for (row, example) in rows.iter().zip(&examples) {
        let (prompt, target) = collator.tokenize(example)?;
        let sequence: Vec<u32> = prompt.iter().chain(&target).copied().collect();
        let input = Tensor::new(&sequence[..sequence.len() - 1], device)?.unsqueeze(0)?;
        let next = Tensor::new(&sequence[1..], device)?.unsqueeze(0)?;
        let logits = teacher.forward(&input, 0, None, false)?;
        let all: Vec<f32> = chosen_logprobs(&logits, &next, 1.0)?
            .squeeze(0)?
            .to_dtype(DType::F32)?
            .to_vec1()?;
        let values = all[prompt.len() - 1..].to_vec();
        tokens += values.len();
        total += values.iter().map(|v| *v as f64).sum::<f64>();
        let mut value: serde_json::Value = serde_json::from_str(row)
            .map_err(|e| TrainerError::Data(format!("{}: {e}", data.display())))?;
        value["teacher_logprobs"] = serde_json::json!(values);
        writeln!(file, "{value}").map_err(|e| TrainerError::Io(out.display().to_string(), e))?;
    }
    Ok(TeacherLogprobsSummary {
        rows: examples.len(),
        tokens,
        mean_logprob: total / tokens.max(1) as f64,
    })
}
