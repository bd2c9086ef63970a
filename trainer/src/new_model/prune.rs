//! `unitforge init-model --from DIR --keep-layers N`: a student made from a teacher by keeping N
//! of its decoder layers, evenly spaced, first and last included (as DistilBERT and Minitron
//! initialise students: a pruned copy starts far closer to the teacher than random weights).
//! Embeddings, final norm, head and tokenizer are the teacher's, so the two share a vocabulary
//! and distillation can compare them token by token.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::data::tokenizer::TOKENIZER_COMPANIONS;
use crate::model::config::ModelConfig;
use crate::model::decoder::checkpoint_files;
use crate::TrainerError;

/// What `prune_layers` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct PruneSummary {
    /// The teacher's layers kept, in order.
    pub kept_layers: Vec<usize>,
    pub teacher_layers: usize,
    pub parameters: usize,
    pub teacher_parameters: usize,
}

/// `keep` indices spread evenly over `0..layers`, the first and the last included.
pub fn evenly_spaced(layers: usize, keep: usize) -> Vec<usize> {
    match keep {
        0 => Vec::new(),
        1 => vec![0],
        _ => (0..keep)
            .map(|i| ((i * (layers - 1)) as f64 / (keep - 1) as f64).round() as usize)
            .collect(),
    }
}

/// Write the teacher in `from` with only `keep` of its layers to `out`.
pub fn prune_layers(from: &Path, keep: usize, out: &Path) -> Result<PruneSummary, TrainerError> {
    let io = |path: &Path| {
        let shown = path.display().to_string();
        move |e: std::io::Error| TrainerError::Io(shown, e)
    };
    let mut config = ModelConfig::from_json_file(&from.join("config.json"))?;
    let layers = config.num_hidden_layers;
    if keep == 0 || keep > layers {
        return Err(TrainerError::Config(format!(
            "--keep-layers {keep}: the model in {} has {layers} layers; keep 1 to {layers}",
            from.display()
        )));
    }
    let kept = evenly_spaced(layers, keep);
    let mut weights: HashMap<String, Tensor> = HashMap::new();
    for file in checkpoint_files(from)? {
        weights.extend(candle_core::safetensors::load(&file, &Device::Cpu)?);
    }
    let teacher_parameters = weights.values().map(Tensor::elem_count).sum();
    let mut student = HashMap::new();
    for (name, tensor) in weights {
        match name
            .strip_prefix("model.layers.")
            .and_then(|rest| rest.split_once('.'))
        {
            Some((index, rest)) => {
                let index: usize = index.parse().map_err(|_| {
                    TrainerError::Config(format!("unexpected tensor name `{name}`"))
                })?;
                if let Some(position) = kept.iter().position(|&k| k == index) {
                    student.insert(format!("model.layers.{position}.{rest}"), tensor);
                }
            }
            None => {
                student.insert(name, tensor);
            }
        }
    }
    let parameters = student.values().map(Tensor::elem_count).sum();
    config.num_hidden_layers = keep;
    std::fs::create_dir_all(out).map_err(io(out))?;
    candle_core::safetensors::save(&student, out.join("model.safetensors"))?;
    std::fs::write(
        out.join("config.json"),
        serde_json::to_string_pretty(&config).expect("config serialises"),
    )
    .map_err(io(out))?;
    for name in std::iter::once("tokenizer.json").chain(TOKENIZER_COMPANIONS) {
        let source = from.join(name);
        if source.is_file() {
            std::fs::copy(&source, out.join(name)).map_err(io(&source))?;
        }
    }
    Ok(PruneSummary {
        kept_layers: kept,
        teacher_layers: layers,
        parameters,
        teacher_parameters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_layers_are_evenly_spaced_with_both_ends() {
        assert_eq!(evenly_spaced(30, 10), [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]);
        assert_eq!(evenly_spaced(30, 15).len(), 15);
        assert_eq!(evenly_spaced(4, 2), [0, 3]);
        assert_eq!(evenly_spaced(4, 4), [0, 1, 2, 3]);
        assert_eq!(evenly_spaced(7, 1), [0]);
    }
}
