//! Stage 1, supervised fine-tuning: LoRA (optionally on a 4-bit base: QLoRA) or full
//! fine-tuning on (prompt, tests) pairs.
//!
//! The loss is masked next-token cross-entropy on the target tokens; the evaluation is the same
//! loss on the held-out split. Everything else (schedule, accumulation, clipping, checkpoints,
//! resume, metrics, plot, output layout) is the shared loop in `train_loop`.

use candle_core::{Device, Tensor};

use crate::data::dataset::{Batch, Targets};
use crate::model::lora::Pass;
use crate::train::loss::masked_nll;
use crate::train::stage_config::StageConfig;
use crate::train::student::{load_student, Student};
use crate::train::supervised::held_out;
use crate::train::train_loop::{
    run, Evaluation, MicroBatch, MicroLoss, Plot, Stage, StageLogic, StageSummary, StepFigures,
};
use crate::TrainerError;

/// Run stage 1.
pub fn train(config: &StageConfig, device: &Device) -> Result<StageSummary, TrainerError> {
    if config.teacher_model.is_some() {
        return Err(TrainerError::Config(
            "teacher_model is a `train distill` setting; `train sft` has no teacher".into(),
        ));
    }
    let student = load_student(config, device, Targets::Required)?;
    run(
        Stage {
            name: "sft",
            config,
            model: &student.model,
            tokenizer: &student.text,
            train_set: &student.train_set,
            headline: "eval_loss",
            progress_figures: &[],
            plot: Plot::losses("sft"),
        },
        &mut Supervised {
            student: &student,
            config,
        },
    )
}

struct Supervised<'a> {
    student: &'a Student,
    config: &'a StageConfig,
}

impl StageLogic for Supervised<'_> {
    fn micro_loss(
        &mut self,
        _index: usize,
        batch: &mut MicroBatch,
    ) -> Result<MicroLoss, TrainerError> {
        let (model, collator) = (&self.student.model, &self.student.collator);
        let batch = collator.collate(&batch.examples.iter().collect::<Vec<_>>(), model.device())?;
        let logprobs = model.target_logprobs(&batch.input_ids, &batch.targets, 1.0, Pass::Train)?;
        Ok(MicroLoss {
            loss: masked_nll(&logprobs, &batch.mask)?,
            tokens: batch.target_tokens,
            parts: Vec::new(),
        })
    }

    fn evaluate(&mut self, _step: usize) -> Result<Evaluation, TrainerError> {
        let no_extra = &mut |_: &Batch, _: &Tensor| Ok(StepFigures::new());
        held_out(
            &self.student.model,
            &self.student.collator,
            &self.student.eval_set,
            self.config.batch_size,
            self.config.eval_batches,
            no_extra,
        )
    }
}
