//! Stage 1, supervised fine-tuning: LoRA (optionally on a 4-bit base: QLoRA) or full
//! fine-tuning on (prompt, tests) pairs.
//!
//! The loss is masked next-token cross-entropy on the target tokens; the evaluation is the same
//! loss on the held-out split. Everything else (schedule, accumulation, clipping, checkpoints,
//! resume, metrics, plot, output layout) is the shared loop in `train_loop`.

use candle_core::{Device, Tensor};

use crate::data::{Batch, Example};
use crate::loss::masked_cross_entropy;
use crate::train_loop::{
    held_out, load_student, run, Figures, MicroLoss, Stage, StageConfig, StageSummary,
};
use crate::TrainerError;

/// Run stage 1.
pub fn train(config: &StageConfig, device: &Device) -> Result<StageSummary, TrainerError> {
    if config.teacher_model.is_some() {
        return Err(TrainerError::Config(
            "teacher_model is a `train distill` setting; `train sft` has no teacher".into(),
        ));
    }
    let student = load_student(config, device)?;
    let (model, collator) = (&student.model, &student.collator);
    let mut micro_loss = |examples: &[Example], _: &mut _| {
        let batch = collator.collate(&examples.iter().collect::<Vec<_>>(), device)?;
        let logits = model.forward(&batch.input_ids, 0, None, true)?;
        Ok(MicroLoss {
            loss: masked_cross_entropy(&logits, &batch.targets, &batch.mask)?,
            tokens: batch.target_tokens,
            parts: Vec::new(),
        })
    };
    let mut evaluate = || {
        let no_extra = &mut |_: &Batch, _: &Tensor| Ok(Figures::new());
        held_out(
            model,
            collator,
            &student.eval_set,
            config.batch_size,
            config.eval_batches,
            no_extra,
        )
    };
    run(
        Stage {
            name: "sft",
            config,
            model,
            tokenizer: &student.tokenizer,
            train_set: &student.train_set,
        },
        &mut micro_loss,
        &mut evaluate,
    )
}
