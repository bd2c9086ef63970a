//! The synthetic SFT corpus: (code under test → pytest file) pairs from varied function families.
//!
//! Each family is a small Python function (or class) written several ways — names, parameter
//! names, loop or built-in, docstring or not — together with this file's own Rust model of what it
//! returns. The expected values in the generated tests come from the Rust model, never from running
//! the Python, so when the scorer later runs every pair (`unitforge data generate` does) a pass is
//! an independent check that the two agree; a pair that fails is dropped and counted. The tests
//! are rendered in a few styles (one test per behaviour, `parametrize`, `pytest.raises`, scripts
//! of method calls) so the model sees the shapes of real test files.

mod families;
mod render;
mod spec;

use std::collections::HashSet;

use unitforge_sandbox::rng::SplitMix64;

use families::FAMILIES;
use render::render_tests;
use spec::{Gen, Spec};

pub use spec::Py;

/// One generated pair.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedPair {
    pub family: &'static str,
    pub module: String,
    pub code: String,
    pub tests: String,
}

/// The names of every family, in the order pairs cycle through them.
pub fn family_names() -> Vec<&'static str> {
    FAMILIES.iter().map(|(name, _)| *name).collect()
}

const MODULES: &[&str] = &[
    "utils",
    "helpers",
    "toolkit",
    "core",
    "logic",
    "library",
    "ops",
    "functions",
];

fn merge_specs(mut first: Spec, second: Spec) -> Spec {
    first.imports.extend(second.imports);
    first.names.extend(second.names);
    first.code = format!("{}\n\n{}", first.code, second.code);
    first.cases.extend(second.cases);
    first.scripts.extend(second.scripts);
    first.params.clear(); // two functions: no single parametrize table
    first
}

/// One pair from family `index` (mod the number of families), drawing from `rng`. A quarter of
/// the modules hold a second family too.
pub fn generate_pair(rng: &mut SplitMix64, index: usize) -> GeneratedPair {
    let mut g = Gen(rng);
    let (family, make) = FAMILIES[index % FAMILIES.len()];
    let mut spec = make(&mut g);
    if g.chance(0.25) {
        let (_, other) = FAMILIES[g.0.below(FAMILIES.len())];
        let second = other(&mut g);
        if second.names.iter().all(|n| !spec.names.contains(n)) {
            spec = merge_specs(spec, second);
        }
    }
    let module = if g.chance(0.5) {
        spec.names[0].to_lowercase()
    } else {
        g.pick(MODULES).to_string()
    };
    let mut imports = spec.imports.clone();
    imports.dedup();
    let code = if imports.is_empty() {
        spec.code.clone()
    } else {
        format!("{}\n\n\n{}", imports.join("\n"), spec.code)
    };
    let tests = render_tests(&mut g, &module, &spec);
    GeneratedPair {
        family,
        module,
        code: blank_lines_between_defs(&code),
        tests,
    }
}

/// PEP 8's two blank lines between top-level definitions.
fn blank_lines_between_defs(code: &str) -> String {
    code.replace("\n\ndef ", "\n\n\ndef ")
        .replace("\n\nclass ", "\n\n\nclass ")
        .replace("\n\n\n\n", "\n\n\n")
}

/// `count` distinct pairs (by code and tests), cycling through the families, seeded.
pub fn generate_corpus(count: usize, seed: u64) -> Vec<GeneratedPair> {
    let mut rng = SplitMix64::new(seed);
    let mut seen = HashSet::new();
    let mut pairs = Vec::with_capacity(count);
    let mut index = 0;
    let mut attempts = 0;
    while pairs.len() < count && attempts < count * 20 {
        let pair = generate_pair(&mut rng, index);
        index += 1;
        attempts += 1;
        if seen.insert((pair.code.clone(), pair.tests.clone())) {
            pairs.push(pair);
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use families::numeric::floor_div;
    use spec::text;
    use unitforge_sandbox::source::PythonSource;

    #[test]
    fn literals_render_as_python() {
        let v = Py::Dict(vec![(
            text("a\"b"),
            Py::List(vec![Py::Int(-1), Py::Bool(true), Py::None]),
        )]);
        assert_eq!(v.to_string(), r#"{"a\"b": [-1, True, None]}"#);
        assert_eq!(Py::Tuple(vec![Py::Int(1)]).to_string(), "(1,)");
        assert_eq!(
            Py::Tuple(vec![text("x"), Py::Int(2)]).to_string(),
            "(\"x\", 2)"
        );
    }

    #[test]
    fn every_family_yields_code_and_tests_that_parse() {
        let mut rng = SplitMix64::new(7);
        for index in 0..FAMILIES.len() * 6 {
            let pair = generate_pair(&mut rng, index);
            PythonSource::parse("code", &pair.code)
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", pair.family, pair.code));
            PythonSource::parse("tests", &pair.tests)
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", pair.family, pair.tests));
            assert!(
                pair.tests
                    .contains(&format!("from {} import ", pair.module)),
                "{}",
                pair.tests
            );
            assert!(pair.tests.contains("def test_"), "{}", pair.tests);
        }
    }

    #[test]
    fn the_corpus_is_distinct_seeded_and_covers_every_family() {
        let a = generate_corpus(300, 1);
        assert_eq!(a, generate_corpus(300, 1));
        assert_ne!(a, generate_corpus(300, 2));
        let distinct: HashSet<_> = a.iter().map(|p| (&p.code, &p.tests)).collect();
        assert_eq!(distinct.len(), 300);
        for (family, _) in FAMILIES {
            assert!(a.iter().any(|p| p.family == *family), "{family} missing");
        }
    }

    #[test]
    fn python_floor_division_is_modelled() {
        // -7 // 2 == -4 and 7 // -2 == -4 in Python; the model must agree before the scorer checks.
        assert_eq!(floor_div(-7, 2), -4);
        assert_eq!(floor_div(7, -2), -4);
        assert_eq!(floor_div(-7, -2), 3);
        assert_eq!(floor_div(6, -3), -2);
        assert_eq!(floor_div(7, 2), 3);
    }
}
