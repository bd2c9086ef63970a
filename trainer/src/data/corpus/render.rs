//! Rendering a family instance's checks as a pytest file, in one of a few styles: one test per
//! behaviour, a `parametrize` table, `pytest.raises` for errors, scripts of method calls.

use crate::data::corpus::spec::{Case, Expect, Gen, Py, Spec};

fn call(case: &Case) -> String {
    let args: Vec<String> = case.args.iter().map(Py::to_string).collect();
    format!("{}({})", case.function, args.join(", "))
}

fn assertion(case: &Case, indent: &str) -> String {
    match &case.expect {
        Expect::Value(Py::Bool(true)) => format!("{indent}assert {}\n", call(case)),
        Expect::Value(Py::Bool(false)) => format!("{indent}assert not {}\n", call(case)),
        Expect::Value(Py::None) => format!("{indent}assert {} is None\n", call(case)),
        Expect::Value(v) => format!("{indent}assert {} == {v}\n", call(case)),
        Expect::Raises(e) => format!(
            "{indent}with pytest.raises({e}):\n{indent}    {}\n",
            call(case)
        ),
    }
}

/// Render the cases as one test per (function, label), in order of first appearance.
fn tests_by_label(cases: &[Case]) -> Vec<String> {
    let mut keys: Vec<(String, &str)> = Vec::new();
    for c in cases {
        let key = (c.function.clone(), c.label);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.iter()
        .map(|(function, label)| {
            let body: String = cases
                .iter()
                .filter(|c| &c.function == function && c.label == *label)
                .map(|c| assertion(c, "    "))
                .collect();
            format!("def test_{}_{label}():\n{body}", function.to_lowercase())
        })
        .collect()
}

/// Render the value cases of one function as a `parametrize` table; the rest by label.
fn tests_parametrized(spec: &Spec) -> Vec<String> {
    let (values, rest): (Vec<Case>, Vec<Case>) = spec
        .cases
        .iter()
        .cloned()
        .partition(|c| matches!(c.expect, Expect::Value(_)));
    let function = &spec.names[0];
    let mut params = spec.params.clone();
    params.push("expected".into());
    let rows: String = values
        .iter()
        .map(|c| {
            let mut items = c.args.clone();
            if let Expect::Value(v) = &c.expect {
                items.push(v.clone());
            }
            format!("        {},\n", Py::Tuple(items))
        })
        .collect();
    let args = spec.params.join(", ");
    let mut tests = vec![format!(
        "@pytest.mark.parametrize(\n    \"{}\",\n    [\n{rows}    ],\n)\ndef test_{function}({}):\n    assert {function}({args}) == expected\n",
        params.join(", "),
        params.join(", ")
    )];
    tests.extend(tests_by_label(&rest));
    tests
}

pub(crate) fn render_tests(g: &mut Gen, module: &str, spec: &Spec) -> String {
    let parametrize = !spec.cases.is_empty() && !spec.params.is_empty() && g.chance(0.35);
    let mut tests = if parametrize {
        tests_parametrized(spec)
    } else {
        tests_by_label(&spec.cases)
    };
    for script in &spec.scripts {
        let body: String = script.lines.iter().map(|l| format!("    {l}\n")).collect();
        tests.push(format!("def {}():\n{body}", script.name));
    }
    let needs_pytest = parametrize
        || spec
            .cases
            .iter()
            .any(|c| matches!(c.expect, Expect::Raises(_)))
        || spec.scripts.iter().any(|s| s.raises);
    let mut names = spec.names.clone();
    names.sort();
    let mut header = String::new();
    if needs_pytest {
        header += "import pytest\n\n";
    }
    header += &format!("from {module} import {}\n", names.join(", "));
    format!("{header}\n\n{}", tests.join("\n\n"))
}
