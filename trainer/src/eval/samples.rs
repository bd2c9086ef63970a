//! Evaluation of a model's samples without running them: for each held-out prompt, a greedy
//! completion, and whether the extracted test file is syntactically valid pytest — it parses
//! (tree-sitter, the sandbox's Python-source tools) and defines at least one test function —
//! and whether it imports the module under test. Running the tests is the sandbox's job.

use serde::Serialize;
use tokenizers::Tokenizer;
use unitforge_sandbox::source::PythonSource;
use unitforge_sandbox::suite::suite_facts;

use crate::data::dataset::Example;
use crate::data::prompts::extract_tests;
use crate::model::decoder::Model;
use crate::model::generate::{generate, SamplingConfig};
use crate::TrainerError;

/// Verdict on one sample.
#[derive(Debug, Clone, Serialize)]
pub struct SampleCheck {
    pub parses: bool,
    pub test_functions: usize,
    pub imports_module: bool,
    /// The extracted test file.
    pub tests: String,
}

impl SampleCheck {
    /// Parses and defines at least one test.
    pub fn valid_pytest(&self) -> bool {
        self.parses && self.test_functions > 0
    }
}

/// Check one extracted test file against `module`.
pub fn check_tests(tests: &str, module: &str) -> SampleCheck {
    let (parses, test_functions) = match PythonSource::parse("sample", tests) {
        Ok(source) => (true, suite_facts(&source).tests.len()),
        Err(_) => (false, 0),
    };
    let imports_module = tests.contains(&format!("from {module} import"))
        || tests.contains(&format!("import {module}"));
    SampleCheck {
        parses,
        test_functions,
        imports_module,
        tests: tests.to_string(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SampleReport {
    pub prompts: usize,
    pub valid_pytest: usize,
    pub valid_fraction: f64,
    pub parses: usize,
    pub imports_module: usize,
    pub mean_test_functions: f64,
    pub samples: Vec<SampleCheck>,
}

/// Prompts generated together.
const BATCH: usize = 8;

/// Greedy samples for up to `limit` examples (all if 0), checked; prompts are batched.
pub fn sample_report(
    model: &Model,
    tokenizer: &Tokenizer,
    end_id: u32,
    examples: &[Example],
    limit: usize,
    max_new_tokens: usize,
    progress: &indicatif::ProgressBar,
) -> Result<SampleReport, TrainerError> {
    let greedy = SamplingConfig {
        max_new_tokens,
        temperature: 0.0,
        ..SamplingConfig::default()
    };
    let chosen = if limit == 0 {
        examples.len()
    } else {
        limit.min(examples.len())
    };
    let mut samples = Vec::with_capacity(chosen);
    for batch in examples[..chosen].chunks(BATCH) {
        let prompts: Vec<String> = batch.iter().map(|e| e.prompt.clone()).collect();
        let completions = generate(model, tokenizer, &prompts, end_id, &greedy)?;
        for (example, completion) in batch.iter().zip(completions) {
            samples.push(check_tests(&extract_tests(&completion), &example.module));
        }
        progress.inc(batch.len() as u64);
    }
    let count = |f: &dyn Fn(&SampleCheck) -> bool| samples.iter().filter(|s| f(s)).count();
    let valid_pytest = count(&|s| s.valid_pytest());
    Ok(SampleReport {
        prompts: samples.len(),
        valid_pytest,
        valid_fraction: valid_pytest as f64 / samples.len().max(1) as f64,
        parses: count(&|s| s.parses),
        imports_module: count(&|s| s.imports_module),
        mean_test_functions: samples.iter().map(|s| s.test_functions as f64).sum::<f64>()
            / samples.len().max(1) as f64,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_pytest_needs_a_parse_and_a_test_function() {
        let good = check_tests(
            "from m import f\n\n\ndef test_f():\n    assert f(1) == 2\n",
            "m",
        );
        assert!(good.valid_pytest() && good.imports_module);
        assert_eq!(good.test_functions, 1);
        let broken = check_tests("def test_f(:\n    assert f(1) == 2\n", "m");
        assert!(!broken.parses && !broken.valid_pytest());
        let no_tests = check_tests("from m import f\n\nx = f(1)\n", "m");
        assert!(no_tests.parses && !no_tests.valid_pytest());
        assert!(!check_tests("def test_f():\n    pass\n", "m").imports_module);
    }
}
