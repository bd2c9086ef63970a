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

use std::io::Write;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use unitforge_sandbox::rng::SplitMix64;

use crate::data::dataset::{parse_jsonl, Batch, Collator, Example, Targets};
use crate::device::{parse_dtype, usable_dtype};
use crate::model::decoder::Model;
use crate::model::generate::{sample_completions, SamplingConfig};
use crate::model::logprobs::chosen_logprobs;
use crate::train::frozen::load_frozen;
use crate::train::loss::{
    jsd_loss, masked_cross_entropy, reverse_kl_on_chosen, reverse_kl_on_logits, top1_agreement,
};
use crate::train::stage_config::{DistillSettings, StageConfig};
use crate::train::student::{load_student, Student};
use crate::train::supervised::held_out;
use crate::train::train_loop::{
    run, Evaluation, MicroBatch, MicroLoss, Plot, Stage, StageLogic, StageSummary,
};
use crate::TrainerError;

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
        .map(|example| collator.tokenize_prompt(example))
        .collect::<Result<Vec<_>, TrainerError>>()?;
    let config = SamplingConfig {
        seed: rng.next_u64(),
        ..sampling.clone()
    };
    let completions = sample_completions(model, collator.tokenizer(), &prompts, end_id, &config)?;
    Ok(examples
        .iter()
        .zip(completions)
        .map(|(example, completion)| Example {
            target: Some(completion.text),
            teacher_logprobs: None,
            ..example.clone()
        })
        .collect())
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
    let student = load_student(config, device, Targets::Required)?;
    let teacher = match &config.teacher_model {
        Some(dir) => Some(load_frozen(
            "teacher",
            dir,
            &student.text.tokenizer,
            student.model.config().vocab_size,
            usable_dtype(device, parse_dtype(&config.dtype)?),
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
    let mut logic = Distillation {
        student: &student,
        teacher: teacher.as_ref(),
        settings,
        config,
    };
    run(
        Stage {
            name: "distill",
            config,
            model: &student.model,
            tokenizer: &student.text,
            train_set: &student.train_set,
            headline: "eval_loss",
            progress_figures: &[],
            plot: Plot::losses("distill"),
        },
        &mut logic,
    )
}

struct Distillation<'a> {
    student: &'a Student,
    teacher: Option<&'a Model>,
    settings: &'a DistillSettings,
    config: &'a StageConfig,
}

impl StageLogic for Distillation<'_> {
    fn micro_loss(
        &mut self,
        _index: usize,
        batch: &mut MicroBatch,
    ) -> Result<MicroLoss, TrainerError> {
        let (settings, student) = (self.settings, self.student);
        let (model, collator) = (&student.model, &student.collator);
        let on_policy = self.teacher.is_some() && batch.rng.uniform() < settings.on_policy_fraction;
        let examples = if on_policy {
            sample_targets(
                model,
                collator,
                &batch.examples,
                student.text.end_id,
                &settings.sampling,
                &mut batch.rng,
            )?
        } else {
            batch.examples.clone()
        };
        let batch = collator.collate(&examples.iter().collect::<Vec<_>>(), model.device())?;
        let logits = model.forward(&batch.input_ids, 0, None, true)?;
        let ce = masked_cross_entropy(&logits, &batch.targets, &batch.mask)?;
        let Divergences { jsd, rkl, .. } = divergences(&logits, &batch, self.teacher, settings)?;
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
    }

    fn evaluate(&mut self, _step: usize) -> Result<Evaluation, TrainerError> {
        evaluate(
            &self.student.model,
            &self.student.collator,
            &self.student.eval_set,
            self.teacher,
            self.settings,
            self.config.batch_size,
            self.config.eval_batches,
        )
    }
}

/// Held-out CE (`eval_loss`, the figure stages compare), and with a teacher the held-out JSD,
/// RKL and top-1 agreement; offline, the chosen-token RKL where the rows carry
/// `teacher_logprobs`. Each is a mean per target token.
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
    let text_codec = crate::data::tokenizer::ModelTokenizer::load(teacher_dir)?;
    let teacher = Model::load_for_inference(teacher_dir, None, device)?;
    let text = std::fs::read_to_string(data)
        .map_err(|e| TrainerError::Io(data.display().to_string(), e))?;
    let examples = parse_jsonl(&text, data, &text_codec.format, Targets::Required)?;
    let rows: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let collator = Collator::new(
        text_codec.tokenizer,
        max_len,
        text_codec.end_id,
        text_codec.end_id,
    );
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
