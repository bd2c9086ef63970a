//! What the supervised stages (SFT and distillation) share: the held-out pass that measures
//! cross-entropy per target token, with whatever other figures a stage computes from the same
//! logits.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};

use crate::data::dataset::{Batch, Collator, Example};
use crate::model::decoder::Model;
use crate::train::loss::masked_cross_entropy;
use crate::train::train_loop::{Evaluation, StepFigures};
use crate::TrainerError;

/// One pass over `limit` held-out batches (all if 0): the masked cross-entropy (`eval_loss`),
/// and the named
/// figures `extra` computes from each batch and its logits; every figure is a mean per target
/// token (each batch weighted by its target tokens).
pub fn held_out(
    model: &Model,
    collator: &Collator,
    examples: &[Example],
    batch_size: usize,
    limit: usize,
    extra: &mut dyn FnMut(&Batch, &Tensor) -> Result<StepFigures, TrainerError>,
) -> Result<Evaluation, TrainerError> {
    let mut loss = 0.0;
    let mut parts: BTreeMap<String, f64> = BTreeMap::new();
    let mut tokens = 0usize;
    for (index, chunk) in examples.chunks(batch_size.max(1)).enumerate() {
        if limit > 0 && index >= limit {
            break;
        }
        let batch = collator.collate(&chunk.iter().collect::<Vec<_>>(), model.device())?;
        let logits = model.forward(&batch.input_ids, 0, None, false)?;
        let weight = batch.target_tokens as f64;
        loss += masked_cross_entropy(&logits, &batch.targets, &batch.mask)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?
            * weight;
        for (key, value) in extra(&batch, &logits)? {
            *parts.entry(key.to_string()).or_default() += value * weight;
        }
        tokens += batch.target_tokens;
    }
    let per_token = |sum: f64| sum / tokens.max(1) as f64;
    let mut evaluation: Evaluation = parts.into_iter().map(|(k, v)| (k, per_token(v))).collect();
    evaluation.insert("eval_loss".into(), per_token(loss));
    Ok(evaluation)
}
