//! Delivered figures (`unitforge eval deliver`): what a user of `generate --deliver` gets, held
//! out. For each row: (a) the greedy suite as written; then one delivery (`deliver::deliver`,
//! N samples, oracle repair, R fix rounds) read at each of its steps — (b) the best sampled suite
//! once pruned, (c) the best of those and their oracle repairs, (d) the best of everything,
//! fix rounds included — and the file actually delivered (checked as written). For each: the
//! share of rows that get a valid suite and the mean kill rate over rows (0 for a row without
//! one), with 95 % bootstrap intervals over rows; beside them the rows' human reference suites
//! and the trivial suite, and the generation and sandbox seconds per row.
//!
//! A delivery costs minutes a row on a CPU, so a run over every held-out row takes hours: a
//! `DeliveryJournal` keeps each finished row as a JSON line, and a run interrupted at any point
//! resumes where it stopped with the same figures (each row's samples depend on the seed, not on
//! the rows before it).

use serde::{Deserialize, Serialize};
use unitforge_sandbox::backend::BlockingBackend;
use unitforge_sandbox::rewards::RewardConfig;
use unitforge_sandbox::score::ScoreInput;

use crate::data::dataset::Example;
use crate::data::prompts::{extract_tests, render, Task};
use crate::deliver::{deliver, Candidate, DeliverOptions, Origin, Writer};
use crate::eval::interval::{bootstrap_mean, Interval};
use crate::eval::report::TRIVIAL_SUITE;
use crate::TrainerError;

/// One way of getting a suite, over the rows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveredStep {
    pub step: String,
    /// Rows that got a valid suite.
    pub valid_rows: f64,
    pub valid_rows_ci: Option<Interval>,
    /// Mean kill rate over rows (0 for a row without a valid suite).
    pub mean_kill_rate: f64,
    pub mean_kill_rate_ci: Option<Interval>,
}

/// One row's outcome at each step: the kill rate of its suite, `None` when it got none.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveredRow {
    pub row: usize,
    pub module: String,
    pub greedy: Option<f64>,
    pub best_of_n: Option<f64>,
    pub repaired: Option<f64>,
    pub fixed: Option<f64>,
    pub delivered: Option<f64>,
    pub reference: Option<f64>,
    pub trivial: Option<f64>,
    pub generation_s: f64,
    pub sandbox_s: f64,
    /// Rows whose scores the backend could not give are left out of every figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveredReport {
    pub model: String,
    pub rows: usize,
    pub samples: usize,
    pub fix_rounds: usize,
    pub steps: Vec<DeliveredStep>,
    pub mean_generation_s: f64,
    pub mean_sandbox_s: f64,
    pub per_row: Vec<DeliveredRow>,
}

/// The best pruned kill rate among `candidates` that `allowed` admits (`None`: nothing kept).
fn best(candidates: &[Candidate], allowed: impl Fn(&Candidate) -> bool) -> Option<f64> {
    candidates
        .iter()
        .filter(|c| allowed(c) && c.kept_tests > 0 && c.invalid.is_none() && c.excluded.is_none())
        .max_by(|a, b| a.composite.total_cmp(&b.composite))
        .map(|c| c.mutant_kill)
}

/// Delivered figures of `writer` on `examples` (the first `limit`; 0 = all). Rows in `done` (a
/// journal's, same settings) are taken as they are; each row delivered now is handed to
/// `finished` with the count of rows done and to do, as soon as it is.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_delivery(
    writer: &mut dyn Writer,
    examples: &[Example],
    limit: usize,
    backend: &BlockingBackend,
    config: &RewardConfig,
    options: &DeliverOptions,
    model_label: &str,
    done: &[DeliveredRow],
    finished: &mut dyn FnMut(&DeliveredRow, usize, usize) -> Result<(), TrainerError>,
) -> Result<DeliveredReport, TrainerError> {
    let count = if limit == 0 {
        examples.len()
    } else {
        limit.min(examples.len())
    };
    let mut per_row = Vec::with_capacity(count);
    for example in &examples[..count] {
        if let Some(row) = done.iter().find(|r| r.row == example.row) {
            per_row.push(row.clone());
            continue;
        }
        let row = deliver_row(writer, example, backend, config, options)?;
        per_row.push(row);
        finished(per_row.last().expect("a row"), per_row.len(), count)?;
    }
    Ok(report(per_row, options, model_label))
}

/// One row's delivery read at each step, beside its greedy, human and trivial suites.
fn deliver_row(
    writer: &mut dyn Writer,
    example: &Example,
    backend: &BlockingBackend,
    config: &RewardConfig,
    options: &DeliverOptions,
) -> Result<DeliveredRow, TrainerError> {
    let code = example
        .code
        .clone()
        .ok_or_else(|| TrainerError::Data(format!("row {} has no `code`", example.row + 1)))?;
    let module = example.module.as_str();
    // (a) greedy, as written; and the two baselines, as written.
    let started = std::time::Instant::now();
    let greedy = writer.write_greedy(&render(
        &Task::Generate {
            module,
            code: &code,
        },
        writer.format(),
    ))?;
    let greedy_s = started.elapsed().as_secs_f64();
    let mut suites = vec![extract_tests(&greedy), TRIVIAL_SUITE.to_string()];
    if let Some(reference) = &example.target {
        suites.push(reference.clone());
    }
    let inputs: Vec<ScoreInput> = suites
        .iter()
        .map(|tests| ScoreInput {
            module: module.to_string(),
            code: code.clone(),
            tests: tests.clone(),
        })
        .collect();
    let started = std::time::Instant::now();
    let scored = backend.score_all(&inputs, config, &|_| {});
    let baseline_s = started.elapsed().as_secs_f64();
    let mut excluded = None;
    let kills: Vec<Option<f64>> = scored
        .into_iter()
        .map(|s| match s.result {
            Ok(report) => report.valid.then_some(report.mutant_kill),
            Err(err) => {
                excluded = Some(err.to_string());
                None
            }
        })
        .collect();
    let delivery = deliver(writer, module, &code, backend, config, options, &|_| {})?;
    let candidates = &delivery.candidates;
    let sampled_lineage = |c: &Candidate| match c.origin {
        Origin::Sampled { .. } => true,
        Origin::Repaired { of } => matches!(candidates[of].origin, Origin::Sampled { .. }),
        Origin::Fixed { .. } => false,
    };
    if let Some(c) = candidates.iter().find(|c| c.excluded.is_some()) {
        excluded = c.excluded.clone();
    }
    Ok(DeliveredRow {
        row: example.row,
        module: module.to_string(),
        greedy: kills[0],
        best_of_n: best(candidates, |c| matches!(c.origin, Origin::Sampled { .. })),
        repaired: best(candidates, sampled_lineage),
        fixed: best(candidates, |_| true),
        delivered: delivery.score.as_ref().map(|s| s.mutant_kill),
        trivial: kills[1],
        reference: kills.get(2).copied().flatten(),
        generation_s: greedy_s + delivery.generation_s,
        sandbox_s: baseline_s + delivery.sandbox_s,
        excluded,
    })
}

/// The figures of each step over `per_row`, the excluded rows left out.
fn report(
    per_row: Vec<DeliveredRow>,
    options: &DeliverOptions,
    model_label: &str,
) -> DeliveredReport {
    let kept: Vec<&DeliveredRow> = per_row.iter().filter(|r| r.excluded.is_none()).collect();
    let step = |name: &str, of: &dyn Fn(&DeliveredRow) -> Option<f64>| {
        let valid: Vec<f64> = kept.iter().map(|r| of(r).map_or(0.0, |_| 1.0)).collect();
        let kill: Vec<f64> = kept.iter().map(|r| of(r).unwrap_or(0.0)).collect();
        let (valid_rows, valid_rows_ci) =
            bootstrap_mean(&valid).map_or((0.0, None), |(m, ci)| (m, Some(ci)));
        let (mean_kill_rate, mean_kill_rate_ci) =
            bootstrap_mean(&kill).map_or((0.0, None), |(m, ci)| (m, Some(ci)));
        DeliveredStep {
            step: name.to_string(),
            valid_rows,
            valid_rows_ci,
            mean_kill_rate,
            mean_kill_rate_ci,
        }
    };
    let steps = vec![
        step("(a) greedy, as written", &|r| r.greedy),
        step("(b) best of N, pruned", &|r| r.best_of_n),
        step("(c) + oracle repair", &|r| r.repaired),
        step("(d) + fix rounds", &|r| r.fixed),
        step("delivered (checked as written)", &|r| r.delivered),
        step("human reference suites", &|r| r.reference),
        step("trivial suite", &|r| r.trivial),
    ];
    let mean = |f: &dyn Fn(&DeliveredRow) -> f64| {
        if kept.is_empty() {
            0.0
        } else {
            kept.iter().map(|r| f(r)).sum::<f64>() / kept.len() as f64
        }
    };
    DeliveredReport {
        model: model_label.to_string(),
        rows: kept.len(),
        samples: options.n,
        fix_rounds: options.fix_rounds,
        steps,
        mean_generation_s: mean(&|r| r.generation_s),
        mean_sandbox_s: mean(&|r| r.sandbox_s),
        per_row,
    }
}

/// What a delivery run's figures depend on: a journal serves only a run with the same.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliverySettings {
    pub model: String,
    pub data: String,
    pub samples: usize,
    pub fix_rounds: usize,
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub seed: u64,
}

/// The journal's first line.
#[derive(Serialize, Deserialize)]
struct JournalHeader {
    delivery_journal: DeliverySettings,
}

/// A file of finished rows: the settings on its first line, then one `DeliveredRow` a line,
/// appended and flushed as each row finishes.
pub struct DeliveryJournal {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl DeliveryJournal {
    /// Open `path` for a run with `settings`: a new journal when there is none, else its rows
    /// so far. A journal of other settings is an error (its rows would mix two runs); a last
    /// line cut short (the run was killed while writing it) is dropped.
    pub fn open(
        path: &std::path::Path,
        settings: &DeliverySettings,
    ) -> Result<(Self, Vec<DeliveredRow>), TrainerError> {
        use std::io::Write;
        let journal_error = |what: String| {
            TrainerError::Data(format!("delivery journal {}: {what}", path.display()))
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(err) => return Err(journal_error(err.to_string())),
        };
        let mut rows = Vec::new();
        let mut keep = 0;
        let mut lines = text.split_inclusive('\n');
        if let Some(first) = lines.next() {
            let header: JournalHeader = serde_json::from_str(first)
                .map_err(|err| journal_error(format!("not a delivery journal ({err})")))?;
            if &header.delivery_journal != settings {
                return Err(journal_error(format!(
                    "written by a run with other settings ({}); this run has {}: use another file",
                    serde_json::to_string(&header.delivery_journal).unwrap_or_default(),
                    serde_json::to_string(settings).unwrap_or_default()
                )));
            }
            keep += first.len();
            // A last line without its newline was cut short by a kill: dropped below.
            for line in lines.take_while(|line| line.ends_with('\n')) {
                let row = serde_json::from_str::<DeliveredRow>(line)
                    .map_err(|err| journal_error(format!("a row: {err}")))?;
                rows.push(row);
                keep += line.len();
            }
        }
        // Appending, after the whole lines only.
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|err| journal_error(err.to_string()))?;
        file.set_len(keep as u64)
            .map_err(|err| journal_error(err.to_string()))?;
        if keep == 0 {
            let header = JournalHeader {
                delivery_journal: settings.clone(),
            };
            let line = serde_json::to_string(&header).map_err(|e| journal_error(e.to_string()))?;
            writeln!(file, "{line}").map_err(|err| journal_error(err.to_string()))?;
        }
        let journal = DeliveryJournal {
            file,
            path: path.to_path_buf(),
        };
        Ok((journal, rows))
    }

    /// Append a finished row and flush it to the disk.
    pub fn record(&mut self, row: &DeliveredRow) -> Result<(), TrainerError> {
        use std::io::Write;
        let line = serde_json::to_string(row)
            .map_err(|err| TrainerError::Data(format!("a delivered row: {err}")))?;
        writeln!(self.file, "{line}")
            .and_then(|()| self.file.sync_data())
            .map_err(|err| TrainerError::Io(self.path.display().to_string(), err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(seed: u64) -> DeliverySettings {
        DeliverySettings {
            model: "models/m".into(),
            data: "eval.jsonl".into(),
            samples: 4,
            fix_rounds: 1,
            max_new_tokens: 320,
            temperature: 0.8,
            seed,
        }
    }

    fn row(index: usize) -> DeliveredRow {
        DeliveredRow {
            row: index,
            module: format!("m{index}"),
            greedy: None,
            best_of_n: Some(0.5),
            repaired: Some(0.5),
            fixed: Some(0.75),
            delivered: Some(0.75),
            reference: Some(1.0),
            trivial: Some(0.0),
            generation_s: 90.0,
            sandbox_s: 3.0,
            excluded: None,
        }
    }

    #[test]
    fn a_journal_resumes_with_its_rows_and_refuses_other_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let (mut journal, rows) = DeliveryJournal::open(&path, &settings(0)).unwrap();
        assert!(rows.is_empty());
        journal.record(&row(0)).unwrap();
        journal.record(&row(3)).unwrap();
        drop(journal);
        // Killed while writing a row: its line is cut short.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"row\": 5, \"modu");
        std::fs::write(&path, text).unwrap();
        let (mut journal, rows) = DeliveryJournal::open(&path, &settings(0)).unwrap();
        assert_eq!(rows, vec![row(0), row(3)]);
        journal.record(&row(5)).unwrap();
        drop(journal);
        let (_, rows) = DeliveryJournal::open(&path, &settings(0)).unwrap();
        assert_eq!(rows, vec![row(0), row(3), row(5)]);
        let err = DeliveryJournal::open(&path, &settings(1))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("other settings"), "{err}");
        std::fs::write(&path, "not json\n").unwrap();
        let err = DeliveryJournal::open(&path, &settings(0))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a delivery journal"), "{err}");
    }

    #[test]
    fn the_report_counts_excluded_rows_out() {
        let mut excluded = row(1);
        excluded.excluded = Some("docker went away".into());
        excluded.delivered = None;
        let report = report(vec![row(0), excluded], &DeliverOptions::default(), "m");
        assert_eq!(report.rows, 1);
        let delivered = &report.steps[4];
        assert_eq!(
            (delivered.valid_rows, delivered.mean_kill_rate),
            (1.0, 0.75)
        );
    }
}
