//! Variants of a code under test: rewrites that keep its behaviour but change its text.
//!
//! A good suite passes on every variant; a suite that reads or pattern-matches the CUT's source
//! does not. Rewrites: rename function locals (never parameters, globals or attributes), strip
//! or rewrite comments, rewrite docstrings, and reformat (blank lines, parenthesised return
//! values). Everything is deterministic from the seed. Renaming is conservative: a function that
//! uses `locals()`/`vars()`/`eval`/`exec` or `match`, or a name that a nested scope mentions, is
//! left alone, because only there could a rename change behaviour.

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use tree_sitter::Node;

use crate::rng::SplitMix64;
use crate::source::{is_docstring, parses_cleanly, visit, PythonSource};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VariantConfig {
    /// How many variants to make.
    pub count: usize,
    pub seed: u64,
}

impl Default for VariantConfig {
    fn default() -> Self {
        Self { count: 2, seed: 0 }
    }
}

/// One kind of semantics-preserving rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rewrite {
    RenameLocals,
    StripComments,
    RewriteComments,
    RewriteDocstrings,
    Reformat,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Variant {
    pub id: String,
    pub rewrites: Vec<Rewrite>,
    /// `old → new` for every renamed local, qualified by its function.
    pub renamed: Vec<String>,
    pub source: String,
}

/// A text edit; `start == end` inserts.
#[derive(Debug, Clone)]
struct Splice {
    start: usize,
    end: usize,
    text: String,
}

fn apply_splices(original: &str, mut splices: Vec<Splice>) -> String {
    splices.sort_by_key(|s| (s.start, s.end));
    let mut out = String::with_capacity(original.len() + 64);
    let mut cursor = 0;
    for splice in splices {
        if splice.start < cursor {
            continue; // overlapping edit: keep the first, which is always the safe choice here
        }
        out.push_str(&original[cursor..splice.start]);
        out.push_str(&splice.text);
        cursor = splice.end;
    }
    out.push_str(&original[cursor..]);
    out
}

const NAME_STEMS: [&str; 10] = [
    "value", "item", "acc", "tmp", "res", "cur", "part", "elem", "entry", "data",
];

/// `count` variants of `source`; each parses, and none equals the original.
pub fn generate_variants(source: &PythonSource, config: &VariantConfig) -> Vec<Variant> {
    let mut variants = Vec::new();
    for index in 0..config.count {
        let seed = config.seed.wrapping_add(index as u64);
        let rewrites = if index % 2 == 0 {
            vec![
                Rewrite::RenameLocals,
                Rewrite::StripComments,
                Rewrite::RewriteDocstrings,
            ]
        } else {
            vec![
                Rewrite::RenameLocals,
                Rewrite::RewriteComments,
                Rewrite::Reformat,
            ]
        };
        let (text, renamed) = rewrite(source, &rewrites, seed);
        if text != source.text() && parses_cleanly(&text) {
            variants.push(Variant {
                id: format!("v{index}"),
                rewrites,
                renamed,
                source: text,
            });
        }
    }
    variants
}

fn rewrite(source: &PythonSource, rewrites: &[Rewrite], seed: u64) -> (String, Vec<String>) {
    let mut splices = Vec::new();
    let mut renamed = Vec::new();
    let mut rng = SplitMix64::new(seed);
    let mut taken = all_identifiers(source);
    for &kind in rewrites {
        match kind {
            Rewrite::RenameLocals => {
                visit(source.root(), &mut |node| {
                    if node.kind() == "function_definition" {
                        rename_locals(
                            source,
                            node,
                            &mut rng,
                            &mut taken,
                            &mut splices,
                            &mut renamed,
                        );
                    }
                    true
                });
            }
            Rewrite::StripComments | Rewrite::RewriteComments => {
                visit(source.root(), &mut |node| {
                    if node.kind() == "comment" {
                        splices.push(comment_splice(source, node, kind == Rewrite::StripComments));
                    }
                    true
                });
            }
            Rewrite::RewriteDocstrings => {
                visit(source.root(), &mut |node| {
                    if node.kind() == "string" && is_docstring(node) {
                        splices.push(Splice {
                            start: node.start_byte(),
                            end: node.end_byte(),
                            text: "\"\"\"Documentation rewritten for a robustness check.\"\"\""
                                .into(),
                        });
                    }
                    !matches!(node.kind(), "string")
                });
            }
            Rewrite::Reformat => reformat(source, &mut splices),
        }
    }
    (apply_splices(source.text(), splices), renamed)
}

fn comment_splice(source: &PythonSource, node: Node<'_>, strip: bool) -> Splice {
    let text = source.text();
    // Remove the spaces before an end-of-line comment too, so no trailing whitespace is left.
    let mut start = node.start_byte();
    while start > 0 && matches!(text.as_bytes()[start - 1], b' ' | b'\t') {
        start -= 1;
    }
    let at_line_start = start == 0 || text.as_bytes()[start - 1] == b'\n';
    let replacement = if strip {
        String::new()
    } else {
        let indent = &text[start..node.start_byte()];
        let gap = if at_line_start { indent } else { "  " };
        format!("{gap}# (comment rewritten)")
    };
    Splice {
        start,
        end: node.end_byte(),
        text: replacement,
    }
}

fn reformat(source: &PythonSource, splices: &mut Vec<Splice>) {
    let root = source.root();
    let mut cursor = root.walk();
    for child in root.named_children(&mut cursor) {
        if matches!(
            child.kind(),
            "function_definition" | "class_definition" | "decorated_definition"
        ) {
            splices.push(Splice {
                start: child.start_byte(),
                end: child.start_byte(),
                text: "\n".into(),
            });
        }
    }
    visit(root, &mut |node| {
        if node.kind() == "return_statement" {
            if let Some(value) = node.named_child(0) {
                if value.kind() != "parenthesized_expression" && value.kind() != "comment" {
                    splices.push(Splice {
                        start: value.start_byte(),
                        end: value.start_byte(),
                        text: "(".into(),
                    });
                    splices.push(Splice {
                        start: value.end_byte(),
                        end: value.end_byte(),
                        text: ")".into(),
                    });
                }
            }
        }
        true
    });
}

fn all_identifiers(source: &PythonSource) -> HashSet<String> {
    let mut names = HashSet::new();
    visit(source.root(), &mut |node| {
        if node.kind() == "identifier" {
            names.insert(source.node_text(node).to_string());
        }
        true
    });
    names
}

const NESTED_SCOPES: [&str; 3] = ["function_definition", "lambda", "class_definition"];
const DYNAMIC_NAME_USERS: [&str; 5] = ["locals", "vars", "eval", "exec", "dir"];

fn rename_locals(
    source: &PythonSource,
    function: Node<'_>,
    rng: &mut SplitMix64,
    taken: &mut HashSet<String>,
    splices: &mut Vec<Splice>,
    renamed: &mut Vec<String>,
) {
    let Some(body) = function.child_by_field_name("body") else {
        return;
    };
    let mut parameters = BTreeSet::new();
    if let Some(params) = function.child_by_field_name("parameters") {
        collect_identifiers(source, params, &mut parameters);
    }
    let mut bound = BTreeSet::new();
    let mut excluded = BTreeSet::new();
    let mut unsafe_function = false;
    visit(body, &mut |node| {
        match node.kind() {
            kind if NESTED_SCOPES.contains(&kind) => {
                collect_identifiers(source, node, &mut excluded);
                return false;
            }
            "global_statement" | "nonlocal_statement" | "match_statement" => {
                collect_identifiers(source, node, &mut excluded);
                unsafe_function |= node.kind() == "match_statement";
            }
            "call" => {
                let callee = node
                    .child_by_field_name("function")
                    .map(|f| source.node_text(f));
                unsafe_function |= callee.is_some_and(|c| DYNAMIC_NAME_USERS.contains(&c));
            }
            "assignment" | "augmented_assignment" | "for_statement" | "for_in_clause" => {
                if let Some(target) = node.child_by_field_name("left") {
                    collect_target_names(source, target, &mut bound);
                }
            }
            "named_expression" => {
                if let Some(name) = node.child_by_field_name("name") {
                    bound.insert(source.node_text(name).to_string());
                }
            }
            "as_pattern_target" => collect_target_names(source, node, &mut bound),
            _ => {}
        }
        true
    });
    if unsafe_function {
        return;
    }
    let function_name = function
        .child_by_field_name("name")
        .map_or("?", |n| source.node_text(n));
    for name in bound {
        if parameters.contains(&name) || excluded.contains(&name) || name.starts_with("__") {
            continue;
        }
        let new_name = loop {
            let stem = NAME_STEMS[rng.below(NAME_STEMS.len())];
            let candidate = format!("{stem}_{}", rng.below(100));
            if taken.insert(candidate.clone()) {
                break candidate;
            }
        };
        visit(body, &mut |node| {
            if NESTED_SCOPES.contains(&node.kind()) {
                return false;
            }
            if node.kind() == "identifier"
                && source.node_text(node) == name
                && is_variable_reference(node)
            {
                splices.push(Splice {
                    start: node.start_byte(),
                    end: node.end_byte(),
                    text: new_name.clone(),
                });
            }
            true
        });
        renamed.push(format!("{function_name}: {name} → {new_name}"));
    }
}

/// Whether an identifier names a variable (not an attribute or a keyword argument's name).
fn is_variable_reference(node: Node<'_>) -> bool {
    let Some(parent) = node.parent() else {
        return true;
    };
    let field_is = |field: &str| parent.child_by_field_name(field) == Some(node);
    !((parent.kind() == "attribute" && field_is("attribute"))
        || (parent.kind() == "keyword_argument" && field_is("name")))
}

fn collect_identifiers(source: &PythonSource, node: Node<'_>, out: &mut BTreeSet<String>) {
    visit(node, &mut |n| {
        if n.kind() == "identifier" {
            out.insert(source.node_text(n).to_string());
        }
        true
    });
}

/// Plain names bound by an assignment target (`a`, `a, b`, `[a, *b]`), not `x.attr` or `x[i]`.
fn collect_target_names(source: &PythonSource, target: Node<'_>, out: &mut BTreeSet<String>) {
    visit(target, &mut |n| match n.kind() {
        "identifier" => {
            out.insert(source.node_text(n).to_string());
            false
        }
        "attribute" | "subscript" => false,
        _ => true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODE: &str = r#""""Stats helpers."""
TOTAL = 0


def mean(values, *, skip=None):
    """Average of values."""
    total = 0  # running sum
    count = 0
    for v in values:
        if v == skip:
            continue
        total += v
        count = count + 1
    helper = lambda x: x + count
    result = total / count if count else 0.0
    return result


def keys(d):
    out = [k for k in d if k]
    return sorted(out, key=len)
"#;

    fn variant(index: usize) -> Variant {
        let source = PythonSource::parse("code", CODE).unwrap();
        generate_variants(&source, &VariantConfig { count: 2, seed: 11 })
            .into_iter()
            .nth(index)
            .unwrap()
    }

    #[test]
    fn renames_locals_but_not_parameters_globals_or_closure_names() {
        let v = variant(0);
        let renamed: Vec<&str> = v
            .renamed
            .iter()
            .map(|r| {
                r.split(':')
                    .nth(1)
                    .unwrap()
                    .split('→')
                    .next()
                    .unwrap()
                    .trim()
            })
            .collect();
        for name in ["total", "result", "v", "out", "k"] {
            assert!(
                renamed.contains(&name),
                "{name} not renamed: {:?}",
                v.renamed
            );
        }
        // `count` is used inside the lambda: conservatively kept. Parameters and globals too.
        for kept in ["count", "values", "skip", "d", "TOTAL"] {
            assert!(!renamed.contains(&kept), "{kept} renamed: {:?}", v.renamed);
        }
        assert!(v.source.contains("def mean(values, *, skip=None):"));
        assert!(v.source.contains("TOTAL = 0"));
        assert!(!v.source.contains("running sum"));
        assert!(!v.source.contains("Average of values"));
        assert!(parses_cleanly(&v.source));
    }

    #[test]
    fn keyword_names_and_attributes_are_not_renamed() {
        let code = "def f(obj):\n    key = 1\n    obj.key = key\n    return dict(key=key)\n";
        let source = PythonSource::parse("code", code).unwrap();
        let v = &generate_variants(&source, &VariantConfig { count: 1, seed: 3 })[0];
        assert!(v.source.contains("obj.key = "), "{}", v.source);
        assert!(v.source.contains("dict(key="), "{}", v.source);
        assert!(!v.source.contains("    key = 1"), "{}", v.source);
    }

    #[test]
    fn reformat_and_rewritten_comments() {
        let v = variant(1);
        assert!(v.source.contains("# (comment rewritten)"));
        assert!(
            v.source.contains("return (sorted(out_") || v.source.contains("return (sorted("),
            "{}",
            v.source
        );
        assert!(v.source.contains("\n\n\n\ndef keys"), "{}", v.source);
        assert!(v.source.contains("Average of values"));
    }

    #[test]
    fn deterministic_from_seed() {
        assert_eq!(variant(0), variant(0));
        let source = PythonSource::parse("code", CODE).unwrap();
        let other = generate_variants(&source, &VariantConfig { count: 1, seed: 12 });
        assert_ne!(other[0].source, variant(0).source);
    }

    #[test]
    fn functions_using_locals_are_left_alone() {
        let code = "def f():\n    x = 1\n    return locals()['x']\n";
        let source = PythonSource::parse("code", code).unwrap();
        let variants = generate_variants(&source, &VariantConfig { count: 1, seed: 0 });
        assert!(variants.iter().all(|v| v.renamed.is_empty()));
    }
}
