//! Suite facts: what a test file contains and what it reaches for, read statically.
//!
//! The runner's report is checked against these facts (every statically found test function
//! must have run), and the reach report flags test code that goes for the sandbox, pytest's
//! internals or the CUT's source instead of its behaviour. `Deny` reaches make a suite invalid
//! under the default reward config; `Warn` reaches are only reported.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tree_sitter::Node;

use crate::source::{visit, PythonSource};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TestFunction {
    /// `test_x` or `TestClass::test_x`.
    pub name: String,
    pub line: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warn,
    Deny,
}

/// One thing the test file reaches for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reach {
    pub what: String,
    pub line: usize,
    pub severity: Severity,
    pub why: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct SuiteFacts {
    pub tests: Vec<TestFunction>,
    pub imports: Vec<String>,
    pub reaches: Vec<Reach>,
}

impl SuiteFacts {
    pub fn denied(&self) -> impl Iterator<Item = &Reach> {
        self.reaches.iter().filter(|r| r.severity == Severity::Deny)
    }
}

const WHY_PROCESS: &str = "tests may not start processes or open sockets";
const WHY_SOURCE: &str =
    "tests must check behaviour, not read the code under test's source or bytecode";
const WHY_INTERNALS: &str = "tests may not reach into pytest's or the interpreter's internals";
const WHY_EXIT: &str = "exiting the interpreter hides test outcomes";

/// Modules a test may not import, and why.
fn module_rule(module: &str) -> Option<(Severity, &'static str)> {
    let root = module.split('.').next().unwrap_or(module);
    Some(match root {
        "_pytest" | "pluggy" | "gc" | "ctypes" | "_ctypes" | "cffi" => {
            (Severity::Deny, WHY_INTERNALS)
        }
        "subprocess" | "socket" | "multiprocessing" | "pty" | "asyncio.subprocess" | "resource" => {
            (Severity::Deny, WHY_PROCESS)
        }
        "dis" | "linecache" | "tokenize" | "marshal" => (Severity::Deny, WHY_SOURCE),
        "inspect" | "importlib" | "threading" | "signal" => (Severity::Warn, WHY_INTERNALS),
        _ => return None,
    })
}

/// Dotted names and attributes a test may not use, and why.
fn name_rule(dotted: &str) -> Option<(Severity, &'static str)> {
    let last = dotted.rsplit('.').next().unwrap_or(dotted);
    Some(match (dotted, last) {
        (_, "getsource" | "getsourcelines" | "getsourcefile" | "findsource" | "getfile") => {
            (Severity::Deny, WHY_SOURCE)
        }
        (_, "__code__" | "co_code" | "__file__" | "__loader__" | "__spec__" | "__cached__") => {
            (Severity::Deny, WHY_SOURCE)
        }
        (
            _,
            "_getframe" | "f_back" | "f_locals" | "f_globals" | "__subclasses__" | "settrace"
            | "setprofile",
        ) => (Severity::Deny, WHY_INTERNALS),
        ("os._exit" | "os.abort" | "os.kill" | "os.killpg", _) => (Severity::Deny, WHY_EXIT),
        ("os.system" | "os.popen" | "os.fork" | "os.forkpty" | "os.posix_spawn", _) => {
            (Severity::Deny, WHY_PROCESS)
        }
        (_, "execv" | "execve" | "execvp" | "spawnv" | "spawnl") => (Severity::Deny, WHY_PROCESS),
        ("sys.exit" | "exit" | "quit", _) => (Severity::Warn, WHY_EXIT),
        ("sys.modules", _) => (Severity::Warn, WHY_INTERNALS),
        _ => return None,
    })
}

/// Read `source` (a parsed test file).
pub fn suite_facts(source: &PythonSource) -> SuiteFacts {
    let mut facts = SuiteFacts::default();
    let mut imports = BTreeSet::new();
    let root = source.root();
    collect_tests(source, root, None, &mut facts.tests);
    visit(root, &mut |node| {
        let line = node.start_position().row + 1;
        let mut flag = |what: String, (severity, why): (Severity, &'static str)| {
            facts.reaches.push(Reach {
                what,
                line,
                severity,
                why: why.to_string(),
            });
        };
        match node.kind() {
            "import_statement" | "import_from_statement" => {
                for (module, is_member) in imported_modules(source, node) {
                    let rule = if is_member {
                        name_rule(&module)
                    } else {
                        module_rule(&module)
                    };
                    if let Some(rule) = rule {
                        flag(format!("import {module}"), rule);
                    }
                    if !is_member {
                        imports.insert(module);
                    }
                }
                return false;
            }
            "attribute" => {
                let dotted = compact(source.node_text(node));
                if let Some(rule) = name_rule(&dotted) {
                    flag(dotted, rule);
                }
            }
            "call" => {
                if let Some(function) = node.child_by_field_name("function") {
                    let callee = compact(source.node_text(function));
                    if function.kind() == "identifier" {
                        if let Some(rule) = name_rule(&callee) {
                            flag(format!("{callee}()"), rule);
                        }
                    }
                    if callee == "__import__" || callee.ends_with("import_module") {
                        flag(format!("{callee}()"), (Severity::Warn, WHY_INTERNALS));
                    }
                    if matches!(
                        callee.as_str(),
                        "open" | "io.open" | "pathlib.Path" | "Path"
                    ) && reads_python_file(source, node)
                    {
                        flag(
                            format!("{callee}() of a .py file"),
                            (Severity::Deny, WHY_SOURCE),
                        );
                    }
                }
            }
            "function_definition" => {
                if let Some(name) = node.child_by_field_name("name") {
                    let name = source.node_text(name);
                    if name.starts_with("pytest_") {
                        flag(
                            format!("def {name}"),
                            (Severity::Deny, "test files may not implement pytest hooks"),
                        );
                    }
                }
            }
            "assignment" => {
                if let Some(left) = node.child_by_field_name("left") {
                    if source.node_text(left) == "pytest_plugins" {
                        flag(
                            "pytest_plugins".into(),
                            (Severity::Deny, "test files may not load pytest plugins"),
                        );
                    }
                }
            }
            _ => {}
        }
        true
    });
    facts.imports = imports.into_iter().collect();
    facts
}

fn compact(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Modules an import names, and for `from m import x` also `m.x` marked as a member.
fn imported_modules(source: &PythonSource, node: Node<'_>) -> Vec<(String, bool)> {
    if node.kind() == "import_from_statement" {
        let module = node
            .child_by_field_name("module_name")
            .map(|m| source.node_text(m).to_string())
            .unwrap_or_default();
        // `from inspect import getsource` is as much a reach as `inspect.getsource`.
        let mut names = vec![(module.clone(), false)];
        let mut cursor = node.walk();
        for name in node.children_by_field_name("name", &mut cursor) {
            let imported = source
                .node_text(name)
                .split_whitespace()
                .next()
                .unwrap_or("");
            names.push((format!("{module}.{imported}"), true));
        }
        return names;
    }
    let mut modules = Vec::new();
    let mut cursor = node.walk();
    for name in node.children_by_field_name("name", &mut cursor) {
        let dotted = match name.kind() {
            "aliased_import" => name
                .child_by_field_name("name")
                .map(|n| source.node_text(n)),
            _ => Some(source.node_text(name)),
        };
        modules.extend(dotted.map(|d| (d.to_string(), false)));
    }
    modules
}

fn reads_python_file(source: &PythonSource, call: Node<'_>) -> bool {
    call.child_by_field_name("arguments")
        .and_then(|args| args.named_child(0))
        .is_some_and(|first| {
            let text = source.node_text(first);
            (first.kind() == "string" && text.trim_end_matches(['"', '\'']).ends_with(".py"))
                || text.contains("__file__")
        })
}

/// Each test function's name with its text less the name — decorators, parameters and body as
/// tokens, comments and layout dropped — for finding repeated tests (`prune.rs`).
pub fn test_function_texts(source: &PythonSource) -> Vec<(String, String)> {
    let mut found = Vec::new();
    collect_test_nodes(
        source,
        source.root(),
        None,
        &mut |test, outer, definition| {
            let mut tokens = Vec::new();
            let mut parts: Vec<Node<'_>> = Vec::new();
            if outer.kind() == "decorated_definition" {
                let mut cursor = outer.walk();
                parts.extend(
                    outer
                        .named_children(&mut cursor)
                        .filter(|c| c.kind() == "decorator"),
                );
            }
            parts.extend(definition.child_by_field_name("parameters"));
            parts.extend(definition.child_by_field_name("body"));
            for part in parts {
                visit(part, &mut |node| {
                    if node.kind() == "comment" {
                        return false;
                    }
                    if node.child_count() == 0 {
                        tokens.push(source.node_text(node));
                    }
                    true
                });
            }
            found.push((test.name, tokens.join(" ")));
        },
    );
    found
}

/// Each test function (`test_x`, `TestClass::test_x`) with the byte range of its whole
/// definition, decorators included, in the order of the file: where in the text a test's
/// verdict belongs (GRPO's per-test credit).
pub fn test_function_spans(source: &PythonSource) -> Vec<(String, std::ops::Range<usize>)> {
    let mut spans = Vec::new();
    collect_test_nodes(source, source.root(), None, &mut |test, outer, _| {
        spans.push((test.name, outer.start_byte()..outer.end_byte()));
    });
    spans
}

/// The test file with the named test functions (`test_x`, `TestClass::test_x`) removed, each
/// with its decorators and its lines; a `Test*` class left with no statement goes with them.
/// Everything else — imports, helpers, fixtures, comments between tests — is kept byte for
/// byte, so the file a user keeps is the one the model wrote, less the tests that were pruned.
/// A parametrized test goes as a whole here; [`without_cases`] removes single cases.
pub fn without_tests(source: &PythonSource, functions: &BTreeSet<String>) -> String {
    let mut removed: Vec<Node<'_>> = Vec::new();
    collect_test_nodes(source, source.root(), None, &mut |test, outer, _| {
        if functions.contains(&test.name) {
            removed.push(outer);
        }
    });
    // A class whose every statement is removed would not parse: remove the class instead.
    let mut cursor = source.root().walk();
    for child in source.root().named_children(&mut cursor) {
        let definition = if child.kind() == "decorated_definition" {
            child.child_by_field_name("definition").unwrap_or(child)
        } else {
            child
        };
        let Some(body) = (definition.kind() == "class_definition")
            .then(|| definition.child_by_field_name("body"))
            .flatten()
        else {
            continue;
        };
        let mut body_cursor = body.walk();
        let statements: Vec<Node<'_>> = body
            .named_children(&mut body_cursor)
            .filter(|n| n.kind() != "comment")
            .collect();
        if !statements.is_empty() && statements.iter().all(|s| removed.contains(s)) {
            removed.retain(|n| !statements.contains(n));
            removed.push(child);
        }
    }
    let text = source.text();
    let ranges: Vec<(usize, usize)> = removed
        .iter()
        .map(|node| whole_lines(text, node.start_byte(), node.end_byte()))
        .collect();
    let kept = cut(text, ranges);
    // The blank lines around a removed test would pile up: at most two in a row.
    let mut tidy = String::with_capacity(kept.len());
    let mut blank_run = 0;
    for line in kept.split_inclusive('\n') {
        blank_run = if line.trim().is_empty() {
            blank_run + 1
        } else {
            0
        };
        if blank_run <= 2 {
            tidy.push_str(line);
        }
    }
    let end = tidy.trim_end().len();
    tidy.truncate(end);
    if !tidy.is_empty() {
        tidy.push('\n');
    }
    tidy
}

/// The cases of parametrized tests to remove: for a test function (`test_x`,
/// `TestClass::test_x`), the positions of its removed cases in pytest's collection order and how
/// many cases pytest collected for it.
pub type CaseRemovals = BTreeMap<String, (BTreeSet<usize>, usize)>;

/// The test file with single cases of parametrized tests removed: each case's entry of the
/// literal list that produced it, with its line where it has one, everything else byte for byte.
/// A function is edited only where the i-th case is surely the list's i-th entry: one
/// `parametrize` decorator, a list literal as its values, as many entries as cases collected
/// (a class parametrize, a parametrized fixture or a second decorator multiplies the cases) and
/// at least one entry left. Returns the text and the functions it could not edit, for the
/// caller to remove whole.
pub fn without_cases(source: &PythonSource, removals: &CaseRemovals) -> (String, BTreeSet<String>) {
    let text = source.text();
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut edited: BTreeSet<String> = BTreeSet::new();
    collect_test_nodes(source, source.root(), None, &mut |test, outer, _| {
        let Some((indices, collected)) = removals.get(&test.name) else {
            return;
        };
        let Some(ParametrizeTable { entries, .. }) = parametrize_table(source, outer) else {
            return;
        };
        let fits = entries.len() == *collected
            && indices.len() < entries.len()
            && indices.iter().all(|&i| i < entries.len());
        if !fits {
            return;
        }
        for &i in indices {
            ranges.push(entry_range(text, &entries, i, indices));
        }
        edited.insert(test.name);
    });
    let kept = cut(text, ranges);
    let not_edited = removals
        .keys()
        .filter(|name| !edited.contains(*name))
        .cloned()
        .collect();
    (kept, not_edited)
}

/// A test's one `parametrize` table: its argument names and the entries of its list literal.
pub(crate) struct ParametrizeTable<'t> {
    /// `"x, expected"` or `["x", "expected"]` as names.
    pub names: Vec<String>,
    pub entries: Vec<Node<'t>>,
}

/// The `parametrize` table of a test function (`outer`: its decorated definition); `None`
/// unless there is exactly one `parametrize` decorator and its values are a list literal.
pub(crate) fn parametrize_table<'t>(
    source: &'t PythonSource,
    outer: Node<'t>,
) -> Option<ParametrizeTable<'t>> {
    if outer.kind() != "decorated_definition" {
        return None;
    }
    let mut cursor = outer.walk();
    let parametrize: Vec<Node<'t>> = outer
        .named_children(&mut cursor)
        .filter(|d| d.kind() == "decorator")
        .filter_map(|d| d.named_child(0))
        .filter(|call| {
            call.kind() == "call"
                && call
                    .child_by_field_name("function")
                    .is_some_and(|f| source.node_text(f).ends_with("parametrize"))
        })
        .collect();
    let [call] = parametrize[..] else {
        return None;
    };
    let arguments = call.child_by_field_name("arguments")?;
    let mut cursor = arguments.walk();
    let mut positional = 0;
    let (mut names, mut values) = (None, None);
    for argument in arguments.named_children(&mut cursor) {
        match argument.kind() {
            "comment" => {}
            "keyword_argument" => {
                let value = argument.child_by_field_name("value");
                match argument
                    .child_by_field_name("name")
                    .map(|n| source.node_text(n))
                {
                    Some("argnames") => names = value,
                    Some("argvalues") => values = value,
                    _ => {}
                }
            }
            _ => {
                positional += 1;
                match positional {
                    1 => names = Some(argument),
                    2 => values = Some(argument),
                    _ => {}
                }
            }
        }
    }
    let values = values.filter(|v| v.kind() == "list")?;
    let names = argument_names(source, names?)?;
    let mut cursor = values.walk();
    let entries: Vec<Node<'t>> = values
        .named_children(&mut cursor)
        .filter(|n| n.kind() != "comment")
        .collect();
    Some(ParametrizeTable { names, entries })
}

/// `"a, b"` or `["a", "b"]` / `("a", "b")` as names; `None` for anything computed.
fn argument_names(source: &PythonSource, node: Node<'_>) -> Option<Vec<String>> {
    let plain = |n: Node<'_>| -> Option<String> {
        let text = source.node_text(n);
        let quote = text.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let inner = text.strip_prefix(quote)?.strip_suffix(quote)?;
        let simple = n.kind() == "string" && !inner.contains(['"', '\'', '\\', '{']);
        simple.then(|| inner.to_string())
    };
    match node.kind() {
        "string" => Some(
            plain(node)?
                .split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
        ),
        "list" | "tuple" => {
            let mut cursor = node.walk();
            let names = node
                .named_children(&mut cursor)
                .filter(|n| n.kind() != "comment")
                .map(plain)
                .collect::<Option<Vec<String>>>();
            names
        }
        _ => None,
    }
}

/// The bytes that remove entry `i` of a list (`removed` names every entry going): its whole
/// lines when it stands on lines of its own (with its comma and a trailing comment); else up to
/// the next entry that stays, or, with none after it, from the last one that stays before it.
fn entry_range(
    text: &str,
    entries: &[Node<'_>],
    i: usize,
    removed: &BTreeSet<usize>,
) -> (usize, usize) {
    let entry = entries[i];
    let (line_start, line_end) = whole_lines(text, entry.start_byte(), entry.end_byte());
    let own_line_before = text[line_start..entry.start_byte()].trim().is_empty();
    let after = text[entry.end_byte()..line_end].trim();
    let after = after.strip_prefix(',').unwrap_or(after).trim();
    let own_line_after = after.is_empty() || after.starts_with('#');
    if own_line_before && own_line_after {
        return (line_start, line_end);
    }
    let stays = |j: &usize| !removed.contains(j);
    if let Some(next) = (i + 1..entries.len()).find(stays) {
        (entry.start_byte(), entries[next].start_byte())
    } else if let Some(before) = (0..i).rev().find(stays) {
        (entries[before].end_byte(), entry.end_byte())
    } else {
        (entry.start_byte(), entry.end_byte())
    }
}

/// The lines bytes `start..end` stand on: from the first line's start (its indentation)
/// through the newline after the last.
fn whole_lines(text: &str, start: usize, end: usize) -> (usize, usize) {
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[end..].find('\n').map_or(text.len(), |i| end + i + 1);
    (line_start, line_end)
}

/// `text` less the byte `ranges` (in any order; overlapping ones count once).
fn cut(text: &str, mut ranges: Vec<(usize, usize)>) -> String {
    ranges.sort_unstable();
    let mut kept = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in ranges {
        if start > at {
            kept.push_str(&text[at..start]);
        }
        at = at.max(end);
    }
    kept.push_str(&text[at..]);
    kept
}

fn collect_tests(
    source: &PythonSource,
    scope: Node<'_>,
    class: Option<&str>,
    out: &mut Vec<TestFunction>,
) {
    collect_test_nodes(source, scope, class, &mut |test, _, _| out.push(test));
}

/// Calls `found` with each test function (pytest's rules: `test*` functions, and `test*`
/// methods of `Test*` classes, not async), its outer node (the decoration, if any) and its
/// definition.
fn collect_test_nodes<'t>(
    source: &'t PythonSource,
    scope: Node<'t>,
    class: Option<&str>,
    found: &mut impl FnMut(TestFunction, Node<'t>, Node<'t>),
) {
    let mut cursor = scope.walk();
    for child in scope.named_children(&mut cursor) {
        let definition = if child.kind() == "decorated_definition" {
            child.child_by_field_name("definition").unwrap_or(child)
        } else {
            child
        };
        let name = definition
            .child_by_field_name("name")
            .map(|n| source.node_text(n))
            .unwrap_or_default();
        match definition.kind() {
            "function_definition" if name.starts_with("test") => {
                let is_async = source.node_text(definition).starts_with("async");
                if !is_async {
                    let test = TestFunction {
                        name: class.map_or(name.to_string(), |c| format!("{c}::{name}")),
                        line: definition.start_position().row + 1,
                    };
                    found(test, child, definition);
                }
            }
            "class_definition" if class.is_none() && name.starts_with("Test") => {
                if let Some(body) = definition.child_by_field_name("body") {
                    collect_test_nodes(source, body, Some(name), found);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_function_spans_cover_decorators_and_class_methods() {
        let text = "import pytest\n\n@pytest.mark.parametrize('x', [1, 2])\ndef test_a(x):\n    assert x\n\n\
                    def helper():\n    pass\n\nclass TestB:\n    def test_c(self):\n        assert 1\n";
        let source = PythonSource::parse("tests", text).unwrap();
        let spans = test_function_spans(&source);
        let named: Vec<(&str, &str)> = spans
            .iter()
            .map(|(name, range)| (name.as_str(), &text[range.clone()]))
            .collect();
        assert_eq!(
            named,
            vec![
                (
                    "test_a",
                    "@pytest.mark.parametrize('x', [1, 2])\ndef test_a(x):\n    assert x"
                ),
                ("TestB::test_c", "def test_c(self):\n        assert 1"),
            ]
        );
    }

    fn facts(code: &str) -> SuiteFacts {
        suite_facts(&PythonSource::parse("tests", code).unwrap())
    }

    fn without(code: &str, names: &[&str]) -> String {
        let source = PythonSource::parse("tests", code).unwrap();
        without_tests(&source, &names.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn removes_named_tests_with_their_decorators_and_keeps_the_rest() {
        let code = "import pytest\nfrom m import f\n\n\ndef helper():\n    return 1\n\n\n@pytest.mark.parametrize('x', [1, 2])\ndef test_a(x):\n    assert f(x) == 3\n\n\n# keep me\ndef test_b():\n    assert f(1) == 1\n\n\ndef test_c():\n    assert f(2) == 2\n";
        let kept = without(code, &["test_a", "test_c"]);
        assert_eq!(
            kept,
            "import pytest\nfrom m import f\n\n\ndef helper():\n    return 1\n\n\n# keep me\ndef test_b():\n    assert f(1) == 1\n"
        );
        let names: Vec<String> = facts(&kept).tests.into_iter().map(|t| t.name).collect();
        assert_eq!(names, vec!["test_b"]);
        // Nothing named: the file unchanged.
        assert_eq!(without(code, &[]), code);
    }

    #[test]
    fn a_class_left_empty_goes_and_one_with_methods_left_stays() {
        let code = "from m import f\n\nclass TestF:\n    def test_x(self):\n        assert f(1) == 9\n\n    def test_y(self):\n        assert f(1) == 1\n\n\nclass TestG:\n    # only one\n    def test_z(self):\n        assert f(0) == 5\n\n\ndef test_w():\n    assert f(2) == 2\n";
        let kept = without(code, &["TestF::test_x", "TestG::test_z"]);
        let source = PythonSource::parse("tests", &kept).expect("still parses");
        let names: Vec<String> = suite_facts(&source)
            .tests
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, vec!["TestF::test_y", "test_w"]);
        assert!(!kept.contains("class TestG"), "{kept}");
        // A method of the same name in another class is another test.
        let kept = without(code, &["test_x"]);
        assert!(kept.contains("def test_x"), "{kept}");
    }

    #[test]
    fn finds_test_functions_and_methods() {
        let f = facts(
            "import pytest\nfrom m import f\n\n@pytest.mark.parametrize('x', [1])\ndef test_a(x):\n    pass\n\ndef helper():\n    pass\n\nclass TestB:\n    def test_c(self):\n        pass\n    def other(self):\n        pass\n\nclass Helper:\n    def test_d(self):\n        pass\n",
        );
        let names: Vec<&str> = f.tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["test_a", "TestB::test_c"]);
        assert_eq!(f.imports, vec!["m", "pytest"]);
        assert!(f.reaches.is_empty());
    }

    #[test]
    fn flags_source_reading_and_internals() {
        let f = facts(
            "import inspect, m\nfrom _pytest.reports import TestReport\nimport os\n\ndef test_x():\n    assert 'a+b' in inspect.getsource(m)\n    assert m.f.__code__.co_code\n    open('m.py').read()\n    os._exit(0)\n",
        );
        let denied: Vec<&str> = f.denied().map(|r| r.what.as_str()).collect();
        assert!(denied.contains(&"inspect.getsource"), "{denied:?}");
        assert!(denied.contains(&"import _pytest.reports"), "{denied:?}");
        assert!(denied.iter().any(|d| d.contains("__code__")), "{denied:?}");
        assert!(denied.contains(&"open() of a .py file"), "{denied:?}");
        assert!(denied.contains(&"os._exit"), "{denied:?}");
        assert!(f
            .reaches
            .iter()
            .any(|r| r.what == "import inspect" && r.severity == Severity::Warn));
    }

    #[test]
    fn flags_from_imports_hooks_and_plugins() {
        let f = facts("from inspect import getsource\npytest_plugins = ['x']\ndef pytest_runtest_makereport(item, call):\n    pass\n");
        let denied: Vec<&str> = f.denied().map(|r| r.what.as_str()).collect();
        assert_eq!(
            denied,
            vec![
                "import inspect.getsource",
                "pytest_plugins",
                "def pytest_runtest_makereport"
            ]
        );
    }
}
