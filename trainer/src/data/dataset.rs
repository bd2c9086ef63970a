//! Datasets and the SFT collator.
//!
//! Rows are JSON lines with the seed's fields: `prompt`, the target in `chosen` (or `response` /
//! `completion`), optional `teacher_logprobs`; and `code` (the CUT), `module` and
//! `reference_tests` where known. A row without a prompt but with `code` gets the generate-tests
//! prompt. The supervised stages need a target in every row; GRPO reads prompts alone. A
//! malformed row is an error naming its file and line.
//!
//! Augmentation (`with_code_variant`) swaps a prompt's code for a semantics-preserving variant,
//! so the model learns tests from what the code does rather than from its exact spelling.
//!
//! The collator tokenises `prompt + "\n" + target + <end>`, predicts each next token, and masks
//! prompt and padding positions out of the loss. Over `max_len`, the prompt loses tokens from its
//! start (so the target's start is always kept); a target too long on its own keeps its start.

use std::path::Path;

use candle_core::{Device, Result as CandleResult, Tensor};
use serde::Deserialize;
use tokenizers::Tokenizer;

use unitforge_sandbox::score::DEFAULT_MODULE;
use unitforge_sandbox::source::PythonSource;
use unitforge_sandbox::variant::{generate_variants, VariantConfig};

use crate::data::prompts::{render, render_messages, PromptFormat, Task, SYSTEM};
use crate::TrainerError;

#[derive(Debug, Deserialize)]
struct Row {
    prompt: Option<String>,
    chosen: Option<String>,
    response: Option<String>,
    completion: Option<String>,
    teacher_logprobs: Option<Vec<f32>>,
    code: Option<String>,
    module: Option<String>,
    reference_tests: Option<String>,
}

/// One training example, its prompt already rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Its position in the dataset (0-based, blank lines not counted): the prompt's id in logs.
    pub row: usize,
    pub prompt: String,
    /// What the model should answer (absent in prompt-only rows).
    pub target: Option<String>,
    pub teacher_logprobs: Option<Vec<f32>>,
    pub code: Option<String>,
    /// The module the prompt names (`solution` when the row gives none).
    pub module: String,
    pub reference_tests: Option<String>,
    /// The prompt was rendered from `code` (so a variant of the code can replace it).
    pub prompt_from_code: bool,
}

/// Whether every row must carry a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targets {
    /// Supervised stages: a row without one is an error.
    Required,
    /// Prompt-only rows load too (GRPO, evaluation).
    Optional,
}

/// Read a JSONL dataset; prompts are rendered in the model's `format`.
pub fn load_jsonl(
    path: &Path,
    format: &PromptFormat,
    targets: Targets,
) -> Result<Vec<Example>, TrainerError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TrainerError::Io(path.display().to_string(), e))?;
    parse_jsonl(&text, path, format, targets)
}

/// `load_jsonl` on text already read from `path` (named in errors); one example per non-blank
/// line, in order.
pub fn parse_jsonl(
    text: &str,
    path: &Path,
    format: &PromptFormat,
    targets: Targets,
) -> Result<Vec<Example>, TrainerError> {
    let mut examples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), index + 1);
        let row: Row =
            serde_json::from_str(line).map_err(|e| TrainerError::Data(format!("{}: {e}", at())))?;
        let target = row
            .chosen
            .or(row.response)
            .or(row.completion)
            .or(row.reference_tests.clone());
        if target.is_none() && targets == Targets::Required {
            return Err(TrainerError::Data(format!(
                "{}: no target (`chosen`, `response` or `completion`)",
                at()
            )));
        }
        let module = row.module.unwrap_or_else(|| DEFAULT_MODULE.into());
        let prompt = match (&row.prompt, &row.code) {
            (Some(prompt), _) => render_messages(SYSTEM, prompt, format),
            (None, Some(code)) => render(
                &Task::Generate {
                    module: &module,
                    code,
                },
                format,
            ),
            (None, None) => {
                return Err(TrainerError::Data(format!(
                    "{}: no `prompt` and no `code`",
                    at()
                )))
            }
        };
        examples.push(Example {
            row: examples.len(),
            prompt,
            target,
            teacher_logprobs: row.teacher_logprobs,
            code: row.code,
            module,
            reference_tests: row.reference_tests,
            prompt_from_code: row.prompt.is_none(),
        });
    }
    if examples.is_empty() {
        return Err(TrainerError::Data(format!(
            "{} holds no examples",
            path.display()
        )));
    }
    Ok(examples)
}

/// Robust augmentation: `example` with its prompt rendered from a semantics-preserving variant
/// of its code (renamed locals, perturbed comments; the sandbox's variant rewrites), chosen by
/// `seed`. `None` when the prompt was not made from code or the code has nothing to rewrite.
pub fn with_code_variant(example: &Example, format: &PromptFormat, seed: u64) -> Option<Example> {
    let code = example
        .code
        .as_deref()
        .filter(|_| example.prompt_from_code)?;
    let source = PythonSource::parse("code", code).ok()?;
    let variant = generate_variants(&source, &VariantConfig { count: 1, seed })
        .into_iter()
        .next()?;
    Some(Example {
        prompt: render(
            &Task::Generate {
                module: &example.module,
                code: &variant.source,
            },
            format,
        ),
        ..example.clone()
    })
}

/// `example.teacher_logprobs` (one per target token, the end token included, as
/// `unitforge teacher-logprobs` writes them) placed at the positions that predict those tokens.
fn aligned_teacher_logprobs(
    example: &Example,
    prompt_len: usize,
    target: &[u32],
) -> Result<Vec<f32>, TrainerError> {
    let given = example.teacher_logprobs.as_deref().unwrap_or_default();
    // Truncation keeps the target's start, so the first target.len() values belong to it.
    if given.len() < target.len() {
        return Err(TrainerError::Data(format!(
            "teacher_logprobs has {} values but the target has {} tokens (with the end token); \
             were they computed with this tokenizer? (`unitforge teacher-logprobs`)",
            given.len(),
            target.len()
        )));
    }
    let mut row = vec![0.0; prompt_len - 1];
    row.extend_from_slice(&given[..target.len()]);
    Ok(row)
}

/// A padded batch: inputs, next-token targets and the loss mask, all [batch, time].
#[derive(Debug)]
pub struct Batch {
    pub input_ids: Tensor,
    pub targets: Tensor,
    pub mask: Tensor,
    /// Target tokens in the batch (the mask's sum).
    pub target_tokens: usize,
    /// The teacher's log-prob of each target token, aligned with `targets` (0 elsewhere), when
    /// every example carries `teacher_logprobs`.
    pub teacher_logprobs: Option<Tensor>,
}

pub struct Collator {
    tokenizer: Tokenizer,
    max_len: usize,
    end_id: u32,
    pad_id: u32,
}

/// Prompt tokens always kept, however long the target.
const MIN_PROMPT_TOKENS: usize = 8;

impl Collator {
    pub fn new(tokenizer: Tokenizer, max_len: usize, end_id: u32, pad_id: u32) -> Self {
        Self {
            tokenizer,
            max_len: max_len.max(MIN_PROMPT_TOKENS + 2),
            end_id,
            pad_id,
        }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, TrainerError> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(|e| TrainerError::Data(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    /// Token ids of the prompt and of `target + <end>`, truncated to fit `max_len`.
    pub fn tokenize(&self, example: &Example) -> Result<(Vec<u32>, Vec<u32>), TrainerError> {
        let target = example.target.as_deref().ok_or_else(|| {
            TrainerError::Data(format!(
                "an example has no target to train on (prompt starts {:?})",
                example.prompt.chars().take(60).collect::<String>()
            ))
        })?;
        self.fit(&example.prompt, target)
    }

    /// The prompt's token ids for generation (GRPO, on-policy distillation, evaluation): its
    /// last `max_len − 1` tokens, whatever the row's reference target (which generation never
    /// reads), so at least one token can follow.
    pub fn tokenize_prompt(&self, example: &Example) -> Result<Vec<u32>, TrainerError> {
        let mut prompt = self.encode(&example.prompt)?;
        let budget = self.max_len - 1;
        if prompt.len() > budget {
            prompt.drain(..prompt.len() - budget);
        }
        Ok(prompt)
    }

    fn fit(&self, prompt: &str, target: &str) -> Result<(Vec<u32>, Vec<u32>), TrainerError> {
        let mut prompt = self.encode(prompt)?;
        let mut target = self.encode(target)?;
        target.push(self.end_id);
        let target_budget = self.max_len - MIN_PROMPT_TOKENS.min(prompt.len());
        target.truncate(target_budget);
        let prompt_budget = self.max_len - target.len();
        if prompt.len() > prompt_budget {
            prompt.drain(..prompt.len() - prompt_budget);
        }
        Ok((prompt, target))
    }

    pub fn collate(&self, examples: &[&Example], device: &Device) -> Result<Batch, TrainerError> {
        let mut rows = Vec::with_capacity(examples.len());
        let with_teacher = examples.iter().all(|e| e.teacher_logprobs.is_some());
        let mut teacher = Vec::new();
        for example in examples {
            let (prompt, target) = self.tokenize(example)?;
            let sequence: Vec<u32> = prompt.iter().chain(&target).copied().collect();
            // Position i predicts token i + 1; it counts when token i + 1 belongs to the target.
            let mask: Vec<f32> = (1..sequence.len())
                .map(|next| if next >= prompt.len() { 1.0 } else { 0.0 })
                .collect();
            if with_teacher {
                teacher.push(aligned_teacher_logprobs(example, prompt.len(), &target)?);
            }
            rows.push((sequence, mask));
        }
        let time = rows.iter().map(|(s, _)| s.len() - 1).max().unwrap_or(1);
        let mut inputs = Vec::new();
        let mut targets = Vec::new();
        let mut masks = Vec::new();
        for (sequence, mask) in &rows {
            let pad = time - (sequence.len() - 1);
            inputs.extend(
                sequence[..sequence.len() - 1]
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(self.pad_id, pad)),
            );
            targets.extend(
                sequence[1..]
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(self.pad_id, pad)),
            );
            masks.extend(mask.iter().copied().chain(std::iter::repeat_n(0.0, pad)));
        }
        let teacher: Vec<f32> = teacher
            .into_iter()
            .flat_map(|mut row| {
                row.resize(time, 0.0);
                row
            })
            .collect();
        let target_tokens = masks.iter().filter(|m| **m > 0.0).count();
        let shape = (rows.len(), time);
        let tensor = |result: CandleResult<Tensor>| result.map_err(TrainerError::from);
        Ok(Batch {
            input_ids: tensor(Tensor::from_vec(inputs, shape, device))?,
            targets: tensor(Tensor::from_vec(targets, shape, device))?,
            mask: tensor(Tensor::from_vec(masks, shape, device))?,
            target_tokens,
            teacher_logprobs: if with_teacher {
                Some(tensor(Tensor::from_vec(teacher, shape, device))?)
            } else {
                None
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> Tokenizer {
        let corpus: Vec<String> = (0..30)
            .map(|i| format!("def f{i}(x):\n    return x * {i}\n"))
            .collect();
        crate::data::tokenizer::train_bpe(&corpus, 300).unwrap()
    }

    fn example(prompt: &str, target: &str) -> Example {
        Example {
            row: 0,
            prompt: prompt.into(),
            target: Some(target.into()),
            teacher_logprobs: None,
            code: None,
            module: DEFAULT_MODULE.into(),
            reference_tests: None,
            prompt_from_code: false,
        }
    }

    #[test]
    fn a_generation_prompt_keeps_its_last_tokens_whatever_the_target() {
        let tokenizer = tokenizer();
        let collator = Collator::new(tokenizer.clone(), 24, 0, 0);
        let prompt = "def f1(x):\n    return x * 1\ndef f2(x):\n    return x * 2\n".repeat(3);
        let all = tokenizer
            .encode(prompt.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert!(all.len() > 23, "the prompt must be longer than the budget");
        let short = collator.tokenize_prompt(&example(&prompt, "")).unwrap();
        let long_target = "def f3(x):\n    return x * 3\n".repeat(20);
        let long = collator
            .tokenize_prompt(&example(&prompt, &long_target))
            .unwrap();
        assert_eq!(
            short, long,
            "the reference target must not change the prompt"
        );
        assert_eq!(
            short,
            all[all.len() - 23..].to_vec(),
            "the last max_len - 1 tokens"
        );
        let untargeted = Example {
            target: None,
            ..example(&prompt, "")
        };
        assert_eq!(collator.tokenize_prompt(&untargeted).unwrap(), short);
    }

    #[test]
    fn a_code_variant_changes_only_the_prompt_and_keeps_the_code_working() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.jsonl");
        let code = "def total(values):\n    running = 0\n    for item in values:\n        running += item\n    return running\n";
        let row =
            serde_json::json!({"module": "m", "code": code, "chosen": "def test_x(): pass\n"});
        let explicit = serde_json::json!({"prompt": "p", "code": code, "chosen": "t"});
        std::fs::write(&path, format!("{row}\n{explicit}\n")).unwrap();
        let examples = load_jsonl(&path, &PromptFormat::Plain, Targets::Required).unwrap();
        let variant = with_code_variant(&examples[0], &PromptFormat::Plain, 3).unwrap();
        assert_ne!(variant.prompt, examples[0].prompt);
        assert_eq!(variant.target, examples[0].target);
        assert_eq!(variant.code, examples[0].code);
        // Still the same function, by name, in a prompt that parses as the template's code block.
        assert!(variant.prompt.contains("def total("), "{}", variant.prompt);
        let shown = variant
            .prompt
            .split("```python\n")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap();
        assert!(unitforge_sandbox::source::parses_cleanly(shown), "{shown}");
        // A row with its own prompt is left alone: its prompt was not made from the code.
        assert!(with_code_variant(&examples[1], &PromptFormat::Plain, 3).is_none());
    }

    #[test]
    fn labels_are_shifted_and_only_the_target_counts() {
        let tok = tokenizer();
        let end =
            crate::data::tokenizer::token_id(&tok, crate::data::tokenizer::END_OF_TEXT).unwrap();
        let collator = Collator::new(tok, 512, end, end);
        let short = example("write tests", "def test_a(): pass");
        let long = example(
            "write tests for this longer prompt please",
            "def test_b():\n    assert f1(2) == 2",
        );
        let (p, t) = collator.tokenize(&short).unwrap();
        let batch = collator.collate(&[&short, &long], &Device::Cpu).unwrap();
        let inputs: Vec<Vec<u32>> = batch.input_ids.to_vec2().unwrap();
        let targets: Vec<Vec<u32>> = batch.targets.to_vec2().unwrap();
        let mask: Vec<Vec<f32>> = batch.mask.to_vec2().unwrap();
        let sequence: Vec<u32> = p.iter().chain(&t).copied().collect();
        assert_eq!(
            &inputs[0][..sequence.len() - 1],
            &sequence[..sequence.len() - 1]
        );
        assert_eq!(&targets[0][..sequence.len() - 1], &sequence[1..]);
        // Exactly the target tokens (with the end token) are predicted.
        assert_eq!(mask[0].iter().filter(|m| **m > 0.0).count(), t.len());
        assert_eq!(mask[0][p.len() - 2], 0.0);
        assert_eq!(mask[0][p.len() - 1], 1.0);
        // Padding is masked.
        assert!(mask[0][sequence.len() - 1..].iter().all(|m| *m == 0.0));
        assert_eq!(*t.last().unwrap(), end);
    }

    #[test]
    fn truncation_keeps_the_start_of_the_target() {
        let tok = tokenizer();
        let end =
            crate::data::tokenizer::token_id(&tok, crate::data::tokenizer::END_OF_TEXT).unwrap();
        let collator = Collator::new(tok, 24, end, end);
        let long_prompt = example(&"x ".repeat(100), "def test_c(): pass");
        let (p, t) = collator.tokenize(&long_prompt).unwrap();
        assert_eq!(p.len() + t.len(), 24);
        assert_eq!(
            *t.last().unwrap(),
            end,
            "the whole target fits once the prompt is cut"
        );
        let long_target = example("p", &"assert 1 == 1\n".repeat(40));
        let (p, t) = collator.tokenize(&long_target).unwrap();
        assert_eq!(p.len() + t.len(), 24);
        let full = collator
            .encode(long_target.target.as_deref().unwrap())
            .unwrap();
        assert_eq!(&t[..], &full[..t.len()], "the target keeps its start");
    }

    #[test]
    fn malformed_rows_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        std::fs::write(
            &path,
            "{\"prompt\": \"p\", \"chosen\": \"c\"}\n{\"prompt\": \"p\"}\n",
        )
        .unwrap();
        let err = load_jsonl(&path, &PromptFormat::Plain, Targets::Required)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.jsonl:2") && err.contains("no target"),
            "{err}"
        );
        std::fs::write(
            &path,
            "{\"prompt\": \"p\", \"response\": \"r\"}\nnot json\n",
        )
        .unwrap();
        assert!(load_jsonl(&path, &PromptFormat::Plain, Targets::Required)
            .unwrap_err()
            .to_string()
            .contains("train.jsonl:2"));
        std::fs::write(
            &path,
            "{\"code\": \"X = 1\\n\", \"module\": \"m\", \"completion\": \"def test_x(): pass\"}\n",
        )
        .unwrap();
        let examples = load_jsonl(&path, &PromptFormat::Plain, Targets::Required).unwrap();
        assert!(
            examples[0].prompt.contains("`m`")
                && examples[0]
                    .target
                    .as_deref()
                    .unwrap()
                    .starts_with("def test_x")
        );
        // Prompt-only rows load where targets are optional (GRPO), and still name a bad line.
        std::fs::write(
            &path,
            "{\"code\": \"X = 1\\n\", \"module\": \"m\"}\n{\"prompt\": \"p\"}\n{}\n",
        )
        .unwrap();
        let err = load_jsonl(&path, &PromptFormat::Plain, Targets::Optional)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.jsonl:3") && err.contains("no `prompt`"),
            "{err}"
        );
        std::fs::write(&path, "{\"code\": \"X = 1\\n\"}\n{\"prompt\": \"p\"}\n").unwrap();
        let prompts = load_jsonl(&path, &PromptFormat::Plain, Targets::Optional).unwrap();
        assert_eq!(prompts.len(), 2);
        assert!(prompts.iter().all(|e| e.target.is_none()));
        assert_eq!(prompts[0].module, DEFAULT_MODULE);
        assert!(prompts[0].prompt.contains("X = 1"));
    }
}
