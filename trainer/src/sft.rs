//! Stage 1, supervised fine-tuning: LoRA (optionally on a 4-bit base: QLoRA) or full
//! fine-tuning on (prompt, tests) pairs.
//!
//! The loss is masked next-token cross-entropy on the target tokens; the evaluation is the same
//! loss on the held-out split. Everything else (schedule, accumulation, clipping, checkpoints,
//! resume, metrics, plot, output layout) is the shared loop in `train_loop`.

use candle_core::{DType, Device};

use crate::data::{Collator, Example};
use crate::loss::masked_cross_entropy;
use crate::model::Model;
use crate::train_loop::{
    load_student, run, Evaluation, MicroLoss, Stage, StageConfig, StageSummary,
};
use crate::TrainerError;

/// Mean masked cross-entropy per target token over `limit` batches of `examples` (all if 0).
pub fn held_out_loss(
    model: &Model,
    collator: &Collator,
    examples: &[Example],
    batch_size: usize,
    limit: usize,
) -> Result<f64, TrainerError> {
    let mut total = 0.0;
    let mut tokens = 0usize;
    for (index, chunk) in examples.chunks(batch_size.max(1)).enumerate() {
        if limit > 0 && index >= limit {
            break;
        }
        let batch = collator.collate(&chunk.iter().collect::<Vec<_>>(), model.device())?;
        let logits = model.forward(&batch.input_ids, 0, None, false)?;
        let loss = masked_cross_entropy(&logits, &batch.targets, &batch.mask)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        total += loss * batch.target_tokens as f64;
        tokens += batch.target_tokens;
    }
    Ok(total / tokens.max(1) as f64)
}

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
        Ok(Evaluation {
            loss: held_out_loss(
                model,
                collator,
                &student.eval_set,
                config.batch_size,
                config.eval_batches,
            )?,
            parts: Default::default(),
        })
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
