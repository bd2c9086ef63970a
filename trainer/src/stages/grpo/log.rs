//! What GRPO writes beside its metrics: every sampled completion with its test file, rewards,
//! advantage or reason for exclusion (`completions.jsonl`, when `log_completions`), and each
//! held-out evaluation (`eval.jsonl`). Both are appended to when a run resumes.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::reward_source::Reward;
use super::round::Group;
use crate::train::checkpoint::io;
use crate::train::train_loop::Evaluation;
use crate::TrainerError;

#[derive(Serialize)]
struct CompletionLine<'a> {
    step: usize,
    prompt_id: usize,
    group: usize,
    completion: &'a str,
    tests: &'a str,
    length: usize,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    rewards: Option<&'a Reward>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advantage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    excluded: Option<&'a str>,
}

/// The stage's two logs in its output directory.
pub(super) struct Logs {
    dir: std::path::PathBuf,
    completions: Option<File>,
    evaluations: File,
}

impl Logs {
    /// Open the logs in `dir`: appended to when `resuming`, else new.
    pub fn open(dir: &Path, log_completions: bool, resuming: bool) -> Result<Self, TrainerError> {
        let open = |name: &str| -> Result<File, TrainerError> {
            let path = dir.join(name);
            std::fs::OpenOptions::new()
                .create(true)
                .append(resuming)
                .write(true)
                .truncate(!resuming)
                .open(&path)
                .map_err(io(&path))
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            completions: if log_completions {
                Some(open("completions.jsonl")?)
            } else {
                None
            },
            evaluations: open("eval.jsonl")?,
        })
    }

    /// One line per sample of the step (0-based `step`; the file counts from 1).
    pub fn completions(&mut self, step: usize, groups: &[Group]) -> Result<(), TrainerError> {
        let Some(file) = self.completions.as_mut() else {
            return Ok(());
        };
        for (index, group) in groups.iter().enumerate() {
            for sample in &group.samples {
                let line = CompletionLine {
                    step: step + 1,
                    prompt_id: group.example.row,
                    group: index,
                    completion: &sample.completion.text,
                    tests: &sample.tests,
                    length: sample.completion.ids.len(),
                    truncated: sample.completion.truncated,
                    rewards: sample.outcome.reward(),
                    advantage: sample.advantage,
                    excluded: sample.outcome.exclusion(),
                };
                let text = serde_json::to_string(&line).expect("completion lines serialise");
                writeln!(file, "{text}").map_err(io(&self.dir))?;
            }
        }
        Ok(())
    }

    /// One line for a held-out evaluation over `completions` sampled completions.
    pub fn evaluation(
        &mut self,
        step: usize,
        completions: usize,
        evaluation: &Evaluation,
    ) -> Result<(), TrainerError> {
        let mut line = serde_json::Map::new();
        line.insert("step".into(), step.into());
        line.insert("completions".into(), completions.into());
        for (key, value) in evaluation {
            line.insert(key.clone(), (*value).into());
        }
        writeln!(self.evaluations, "{}", serde_json::Value::Object(line)).map_err(io(&self.dir))
    }
}
