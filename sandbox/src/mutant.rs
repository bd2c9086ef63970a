//! Mutants of a code under test: small, syntactically valid changes a good suite should catch.
//!
//! A [`Mutant`] is one [`Edit`] applied to the original source, with a stable id (a hash of the
//! edit, so the same mutant has the same id in every run and report), its place and a one-line
//! diff. Generation drops edits that do not parse and edits that produce a source identical to
//! another mutant's, then samples deterministically down to the configured cap. Mutants whose
//! bytecode equals the original's are found later, by the runner, since only CPython can say.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::operator::{candidate_edits, Edit, Operator};
use crate::rng::SplitMix64;
use crate::source::{parses_cleanly, PythonSource};

/// How many mutants to make and which operators to use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MutantConfig {
    /// At most this many mutants per code under test; more are sampled down by `seed`.
    pub max_mutants: usize,
    pub seed: u64,
    /// Operators to use; empty means all.
    pub operators: Vec<Operator>,
    /// Run each mutant with only the tests that run a line it changes (line coverage from one
    /// extra run of the suite); a mutant no test reaches is `not_covered`, never run.
    pub coverage_guided: bool,
}

impl Default for MutantConfig {
    fn default() -> Self {
        Self {
            max_mutants: 40,
            seed: 0,
            operators: Vec::new(),
            coverage_guided: true,
        }
    }
}

/// One mutant of the code under test.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Mutant {
    /// Stable id: `m` + 10 hex digits of a hash of the edit.
    pub id: String,
    pub operator: Operator,
    /// 1-based line and column (in characters) where the edit starts.
    pub line: usize,
    pub column: usize,
    /// Byte span of the original that is replaced.
    pub start: usize,
    pub end: usize,
    pub replacement: String,
    /// `original line` → `mutated line`, trimmed, for reports.
    pub diff: String,
}

impl Mutant {
    fn new(original: &str, edit: Edit) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(edit.operator.name().as_bytes());
        hasher.update(edit.start.to_le_bytes());
        hasher.update(edit.end.to_le_bytes());
        hasher.update(edit.replacement.as_bytes());
        let digest = hasher.finalize();
        let id = format!("m{}", &hex::encode(digest)[..10]);
        let line_start = original[..edit.start].rfind('\n').map_or(0, |i| i + 1);
        let line = original[..edit.start].matches('\n').count() + 1;
        let column = original[line_start..edit.start].chars().count() + 1;
        let line_end = original[edit.end..]
            .find('\n')
            .map_or(original.len(), |i| edit.end + i);
        let before = &original[line_start..line_end];
        let after = format!(
            "{}{}{}",
            &original[line_start..edit.start],
            edit.replacement,
            &original[edit.end..line_end]
        );
        let diff = format!("{} → {}", one_line(before), one_line(&after));
        Self {
            id,
            operator: edit.operator,
            line,
            column,
            start: edit.start,
            end: edit.end,
            replacement: edit.replacement,
            diff,
        }
    }

    /// The mutated source.
    pub fn apply(&self, original: &str) -> String {
        let mut out = String::with_capacity(original.len() + self.replacement.len());
        out.push_str(&original[..self.start]);
        out.push_str(&self.replacement);
        out.push_str(&original[self.end..]);
        out
    }
}

fn one_line(text: &str) -> String {
    let joined: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = joined.join(" ⏎ ");
    if line.chars().count() > 120 {
        line.chars().take(117).collect::<String>() + "..."
    } else {
        line
    }
}

/// What generation did, for reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MutantCensus {
    /// Edits the operators proposed.
    pub candidates: usize,
    /// Dropped because the mutated source does not parse.
    pub unparsable: usize,
    /// Dropped because another mutant produced the same source.
    pub duplicates: usize,
    /// Left out by the cap.
    pub sampled_out: usize,
}

/// Mutants of `original` for `edits`, without those that do not parse or that repeat a source
/// already produced (or the original itself).
fn distinct_parsable(original: &str, edits: Vec<Edit>) -> (Vec<Mutant>, MutantCensus) {
    let mut census = MutantCensus {
        candidates: edits.len(),
        ..MutantCensus::default()
    };
    let mut seen = std::collections::HashSet::new();
    let mut mutants = Vec::new();
    for edit in edits {
        let mutant = Mutant::new(original, edit);
        let mutated = mutant.apply(original);
        if mutated == original || !seen.insert(mutated.clone()) {
            census.duplicates += 1;
        } else if !parses_cleanly(&mutated) {
            census.unparsable += 1;
        } else {
            mutants.push(mutant);
        }
    }
    (mutants, census)
}

/// All mutants of `source` under `config`, in source order.
pub fn generate_mutants(
    source: &PythonSource,
    config: &MutantConfig,
) -> (Vec<Mutant>, MutantCensus) {
    let enabled: Vec<Operator> = if config.operators.is_empty() {
        Operator::ALL.to_vec()
    } else {
        config.operators.clone()
    };
    let (mut mutants, mut census) =
        distinct_parsable(source.text(), candidate_edits(source, &enabled));
    if mutants.len() > config.max_mutants {
        census.sampled_out = mutants.len() - config.max_mutants;
        let mut order: Vec<usize> = (0..mutants.len()).collect();
        SplitMix64::new(config.seed).shuffle(&mut order);
        let mut keep: Vec<usize> = order.into_iter().take(config.max_mutants).collect();
        keep.sort_unstable();
        mutants = keep.into_iter().map(|i| mutants[i].clone()).collect();
    }
    (mutants, census)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODE: &str = "def clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    if x > hi:\n        return hi\n    return x\n";

    #[test]
    fn every_mutant_parses_and_differs() {
        let source = PythonSource::parse("code", CODE).unwrap();
        let (mutants, census) = generate_mutants(&source, &MutantConfig::default());
        assert!(mutants.len() >= 8, "{census:?}");
        for mutant in &mutants {
            let mutated = mutant.apply(CODE);
            assert_ne!(mutated, CODE);
            assert!(parses_cleanly(&mutated), "{}", mutant.diff);
        }
    }

    #[test]
    fn ids_are_stable_and_unique() {
        let source = PythonSource::parse("code", CODE).unwrap();
        let (a, _) = generate_mutants(&source, &MutantConfig::default());
        let (b, _) = generate_mutants(&source, &MutantConfig::default());
        assert_eq!(a, b);
        let ids: std::collections::HashSet<_> = a.iter().map(|m| &m.id).collect();
        assert_eq!(ids.len(), a.len());
    }

    #[test]
    fn place_and_diff() {
        let source = PythonSource::parse("code", CODE).unwrap();
        let (mutants, _) = generate_mutants(&source, &MutantConfig::default());
        let boundary = mutants
            .iter()
            .find(|m| m.operator == Operator::RelationalBoundary)
            .unwrap();
        assert_eq!((boundary.line, boundary.column), (2, 10));
        assert_eq!(boundary.diff, "if x < lo: → if x <= lo:");
    }

    #[test]
    fn cap_samples_deterministically_by_seed() {
        let source = PythonSource::parse("code", CODE).unwrap();
        let capped = |seed| {
            let config = MutantConfig {
                max_mutants: 4,
                seed,
                ..MutantConfig::default()
            };
            generate_mutants(&source, &config)
        };
        let (first, census) = capped(1);
        assert_eq!(first.len(), 4);
        assert!(census.sampled_out > 0);
        assert_eq!(first, capped(1).0);
        assert_ne!(first, capped(2).0);
        assert!(first.windows(2).all(|w| w[0].start <= w[1].start));
    }

    #[test]
    fn duplicates_identity_and_unparsable_edits_are_dropped() {
        let original = "x = a + b\n";
        let edit = |start, end, replacement: &str| Edit {
            operator: Operator::Arithmetic,
            start,
            end,
            replacement: replacement.into(),
        };
        let edits = vec![
            edit(6, 7, "-"),
            edit(6, 7, "-"),
            edit(6, 7, "+"),
            edit(6, 7, "+ +"),
            edit(4, 5, "("),
        ];
        let (mutants, census) = distinct_parsable(original, edits);
        assert_eq!(mutants.len(), 2);
        assert_eq!(census.duplicates, 2);
        assert_eq!(census.unparsable, 1);
    }
}
