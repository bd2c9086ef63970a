//! Mutation operators: which syntax each one rewrites, and into what.
//!
//! The table follows the operators that mutmut, cosmic-ray and MutPy share (see
//! `docs/mutants.md` for the choice and the reasons). Each operator turns one syntax node into
//! one or more [`Edit`]s: byte-exact replacements of a span of the original source. Nothing here
//! decides what is worth running; `mutant.rs` filters, deduplicates and samples.

use serde::{Deserialize, Serialize};
use tree_sitter::Node;

use crate::source::{in_annotation, in_main_guard, is_docstring, visit, PythonSource};

/// A family of mutations, named as in the reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    /// `+` ↔ `-`, `*` ↔ `/`, `//` → `/`, `%` → `*`, `**` → `*`, shifts and bitwise swapped.
    Arithmetic,
    /// `<` ↔ `<=`, `>` ↔ `>=`: the boundary mutations.
    RelationalBoundary,
    /// `<` → `>=`, `<=` → `>`, `>` → `<=`, `>=` → `<`: the full negation.
    RelationalNegation,
    /// `==` ↔ `!=`.
    Equality,
    /// `is` ↔ `is not`, `in` ↔ `not in`.
    IdentityMembership,
    /// `and` ↔ `or`.
    Boolean,
    /// `not x` → `x`.
    NotRemoval,
    /// `if c:` → `if not (c):` (also `elif`, `while`).
    NotInsertion,
    /// `-x` → `x`, `~x` → `x`.
    UnaryRemoval,
    /// `+=` ↔ `-=`, `*=` ↔ `/=`, and the rest as for arithmetic.
    AugmentedAssignment,
    /// `0` ↔ `1`, `n` → `n + 1` (integers and floats).
    Number,
    /// `True` ↔ `False`.
    BooleanConstant,
    /// `"s"` → `"XXsXX"` (mutmut's marker, which no real string contains).
    StringConstant,
    /// `return expr` → `return None`.
    ReturnValue,
    /// `break` ↔ `continue`.
    BreakContinue,
    /// A simple statement (call, assignment, `raise`, `del`, `assert`) → `pass`.
    StatementDeletion,
}

impl Operator {
    pub const ALL: [Operator; 16] = [
        Operator::Arithmetic,
        Operator::RelationalBoundary,
        Operator::RelationalNegation,
        Operator::Equality,
        Operator::IdentityMembership,
        Operator::Boolean,
        Operator::NotRemoval,
        Operator::NotInsertion,
        Operator::UnaryRemoval,
        Operator::AugmentedAssignment,
        Operator::Number,
        Operator::BooleanConstant,
        Operator::StringConstant,
        Operator::ReturnValue,
        Operator::BreakContinue,
        Operator::StatementDeletion,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Operator::Arithmetic => "arithmetic",
            Operator::RelationalBoundary => "relational_boundary",
            Operator::RelationalNegation => "relational_negation",
            Operator::Equality => "equality",
            Operator::IdentityMembership => "identity_membership",
            Operator::Boolean => "boolean",
            Operator::NotRemoval => "not_removal",
            Operator::NotInsertion => "not_insertion",
            Operator::UnaryRemoval => "unary_removal",
            Operator::AugmentedAssignment => "augmented_assignment",
            Operator::Number => "number",
            Operator::BooleanConstant => "boolean_constant",
            Operator::StringConstant => "string_constant",
            Operator::ReturnValue => "return_value",
            Operator::BreakContinue => "break_continue",
            Operator::StatementDeletion => "statement_deletion",
        }
    }
}

impl std::fmt::Display for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One replacement of a byte span of the original source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub operator: Operator,
    pub start: usize,
    pub end: usize,
    pub replacement: String,
}

fn binary_replacement(op: &str) -> Option<&'static str> {
    Some(match op {
        "+" => "-",
        "-" => "+",
        "*" => "/",
        "/" => "*",
        "//" => "/",
        "%" => "*",
        "**" => "*",
        "<<" => ">>",
        ">>" => "<<",
        "&" => "|",
        "|" => "&",
        "^" => "&",
        _ => return None,
    })
}

fn comparison_replacements(op: &str) -> Vec<(Operator, &'static str)> {
    match op {
        "<" => vec![
            (Operator::RelationalBoundary, "<="),
            (Operator::RelationalNegation, ">="),
        ],
        "<=" => vec![
            (Operator::RelationalBoundary, "<"),
            (Operator::RelationalNegation, ">"),
        ],
        ">" => vec![
            (Operator::RelationalBoundary, ">="),
            (Operator::RelationalNegation, "<="),
        ],
        ">=" => vec![
            (Operator::RelationalBoundary, ">"),
            (Operator::RelationalNegation, "<"),
        ],
        "==" => vec![(Operator::Equality, "!=")],
        "!=" => vec![(Operator::Equality, "==")],
        "is" => vec![(Operator::IdentityMembership, "is not")],
        "in" => vec![(Operator::IdentityMembership, "not in")],
        _ => {
            let squashed: String = op.split_whitespace().collect::<Vec<_>>().join(" ");
            match squashed.as_str() {
                "is not" => vec![(Operator::IdentityMembership, "is")],
                "not in" => vec![(Operator::IdentityMembership, "in")],
                _ => vec![],
            }
        }
    }
}

/// Every candidate edit of `source`, in source order, outside docstrings, annotations,
/// `# pragma: no mutate` lines and the `__main__` guard.
pub fn candidate_edits(source: &PythonSource, enabled: &[Operator]) -> Vec<Edit> {
    let skip_lines = source.no_mutate_lines();
    let mut edits = Vec::new();
    visit(source.root(), &mut |node| {
        if is_docstring(node) || in_annotation(node) || node.kind() == "comment" {
            return false;
        }
        if node.kind() == "if_statement" && in_main_guard(source, node.child(0).unwrap_or(node)) {
            return false;
        }
        if !skip_lines.contains(&node.start_position().row) {
            edits_for_node(source, node, &mut edits);
        }
        true
    });
    edits.retain(|edit| enabled.contains(&edit.operator));
    edits.sort_by_key(|edit| (edit.start, edit.end, edit.operator));
    edits
}

fn edit(operator: Operator, node: Node<'_>, replacement: impl Into<String>) -> Edit {
    Edit {
        operator,
        start: node.start_byte(),
        end: node.end_byte(),
        replacement: replacement.into(),
    }
}

fn edits_for_node(source: &PythonSource, node: Node<'_>, out: &mut Vec<Edit>) {
    let text = source.node_text(node);
    match node.kind() {
        "binary_operator" => {
            if let Some(op) = node.child_by_field_name("operator") {
                if let Some(new) = binary_replacement(source.node_text(op)) {
                    out.push(edit(Operator::Arithmetic, op, new));
                }
            }
        }
        "comparison_operator" => {
            let mut cursor = node.walk();
            for op in node.children_by_field_name("operators", &mut cursor) {
                for (operator, new) in comparison_replacements(source.node_text(op)) {
                    out.push(edit(operator, op, new));
                }
            }
        }
        "boolean_operator" => {
            if let Some(op) = node.child_by_field_name("operator") {
                let new = if source.node_text(op) == "and" {
                    "or"
                } else {
                    "and"
                };
                out.push(edit(Operator::Boolean, op, new));
            }
        }
        "not_operator" => {
            if let Some(argument) = node.child_by_field_name("argument") {
                out.push(edit(Operator::NotRemoval, node, source.node_text(argument)));
            }
        }
        "if_statement" | "elif_clause" | "while_statement" => {
            if let Some(condition) = node.child_by_field_name("condition") {
                let inner = source.node_text(condition);
                out.push(edit(
                    Operator::NotInsertion,
                    condition,
                    format!("not ({inner})"),
                ));
            }
        }
        "unary_operator" => {
            let op = node
                .child_by_field_name("operator")
                .map(|op| source.node_text(op));
            if let (Some("-" | "~"), Some(argument)) = (op, node.child_by_field_name("argument")) {
                out.push(edit(
                    Operator::UnaryRemoval,
                    node,
                    source.node_text(argument),
                ));
            }
        }
        "augmented_assignment" => {
            if let Some(op) = node.child_by_field_name("operator") {
                let symbol = source.node_text(op).trim_end_matches('=');
                if let Some(new) = binary_replacement(symbol) {
                    out.push(edit(Operator::AugmentedAssignment, op, format!("{new}=")));
                }
            }
        }
        "integer" => {
            if let Some(new) = mutate_integer(text) {
                out.push(edit(Operator::Number, node, new));
            }
        }
        "float" => {
            if let Ok(value) = text.replace('_', "").parse::<f64>() {
                if value.is_finite() && !text.contains(['j', 'J']) {
                    out.push(edit(Operator::Number, node, format!("{:?}", value + 1.0)));
                }
            }
        }
        "true" => out.push(edit(Operator::BooleanConstant, node, "False")),
        "false" => out.push(edit(Operator::BooleanConstant, node, "True")),
        "string" => {
            if let Some(new) = mutate_string(source, node) {
                out.push(edit(Operator::StringConstant, node, new));
            }
        }
        "return_statement" => {
            if let Some(value) = node.named_child(0) {
                if value.kind() != "none" {
                    out.push(edit(Operator::ReturnValue, node, "return None"));
                }
            }
        }
        "break_statement" => out.push(edit(Operator::BreakContinue, node, "continue")),
        "continue_statement" => out.push(edit(Operator::BreakContinue, node, "break")),
        "expression_statement" | "raise_statement" | "delete_statement" | "assert_statement"
            if !is_docstring(node) && node.parent().is_some_and(|p| p.kind() == "block") =>
        {
            out.push(edit(Operator::StatementDeletion, node, "pass"));
        }
        _ => {}
    }
}

fn mutate_integer(text: &str) -> Option<String> {
    let digits = text.replace('_', "");
    let lower = digits.to_ascii_lowercase();
    let value: i128 = if let Some(hex) = lower.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = lower.strip_prefix("0o") {
        i128::from_str_radix(oct, 8).ok()?
    } else if let Some(bin) = lower.strip_prefix("0b") {
        i128::from_str_radix(bin, 2).ok()?
    } else if lower.ends_with(['j', 'l']) {
        return None;
    } else {
        lower.parse().ok()?
    };
    Some(match value {
        0 => "1".to_string(),
        1 => "0".to_string(),
        n => (n + 1).to_string(),
    })
}

/// `"abc"` → `"XXabcXX"`, keeping prefix and quotes; f-strings get the marker outside their
/// interpolations. Byte strings and docstrings are left alone.
fn mutate_string(source: &PythonSource, node: Node<'_>) -> Option<String> {
    if is_docstring(node)
        || node
            .parent()
            .is_some_and(|p| p.kind() == "concatenated_string" && is_docstring(p))
    {
        return None;
    }
    let start = node.child(0).filter(|c| c.kind() == "string_start")?;
    let end = node
        .child(node.child_count().saturating_sub(1))
        .filter(|c| c.kind() == "string_end")?;
    let opening = source.node_text(start);
    if opening.to_ascii_lowercase().contains('b') {
        return None;
    }
    let text = source.node_text(node);
    let inner_start = start.end_byte() - node.start_byte();
    let inner_end = end.start_byte() - node.start_byte();
    Some(format!(
        "{}XX{}XX{}",
        &text[..inner_start],
        &text[inner_start..inner_end],
        &text[inner_end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edits_of(code: &str, operator: Operator) -> Vec<String> {
        let source = PythonSource::parse("code", code).unwrap();
        candidate_edits(&source, &[operator])
            .into_iter()
            .map(|e| format!("{}{}{}", &code[..e.start], e.replacement, &code[e.end..]))
            .collect()
    }

    #[test]
    fn arithmetic() {
        assert_eq!(
            edits_of("x = a + b * c\n", Operator::Arithmetic),
            vec!["x = a - b * c\n", "x = a + b / c\n"]
        );
        assert_eq!(
            edits_of("x = a // b % c ** 2\n", Operator::Arithmetic).len(),
            3
        );
    }

    #[test]
    fn relational_boundary_and_negation() {
        assert_eq!(
            edits_of("ok = a < b\n", Operator::RelationalBoundary),
            vec!["ok = a <= b\n"]
        );
        assert_eq!(
            edits_of("ok = a < b\n", Operator::RelationalNegation),
            vec!["ok = a >= b\n"]
        );
        assert_eq!(
            edits_of("ok = a >= b\n", Operator::RelationalBoundary),
            vec!["ok = a > b\n"]
        );
        assert_eq!(
            edits_of("ok = 0 < a <= 9\n", Operator::RelationalBoundary),
            vec!["ok = 0 <= a <= 9\n", "ok = 0 < a < 9\n"]
        );
    }

    #[test]
    fn equality_identity_membership() {
        assert_eq!(
            edits_of("ok = a == b\n", Operator::Equality),
            vec!["ok = a != b\n"]
        );
        assert_eq!(
            edits_of("ok = a is None\n", Operator::IdentityMembership),
            vec!["ok = a is not None\n"]
        );
        assert_eq!(
            edits_of("ok = a is not None\n", Operator::IdentityMembership),
            vec!["ok = a is None\n"]
        );
        assert_eq!(
            edits_of("ok = a not in b\n", Operator::IdentityMembership),
            vec!["ok = a in b\n"]
        );
        assert_eq!(
            edits_of("ok = a in b\n", Operator::IdentityMembership),
            vec!["ok = a not in b\n"]
        );
    }

    #[test]
    fn boolean_and_not() {
        assert_eq!(
            edits_of("ok = a and b\n", Operator::Boolean),
            vec!["ok = a or b\n"]
        );
        assert_eq!(
            edits_of("ok = not a\n", Operator::NotRemoval),
            vec!["ok = a\n"]
        );
        assert_eq!(
            edits_of(
                "if a > 1:\n    pass\nelif b:\n    pass\nwhile c:\n    pass\n",
                Operator::NotInsertion
            ),
            vec![
                "if not (a > 1):\n    pass\nelif b:\n    pass\nwhile c:\n    pass\n",
                "if a > 1:\n    pass\nelif not (b):\n    pass\nwhile c:\n    pass\n",
                "if a > 1:\n    pass\nelif b:\n    pass\nwhile not (c):\n    pass\n",
            ]
        );
    }

    #[test]
    fn unary_and_augmented() {
        assert_eq!(
            edits_of("x = -a\n", Operator::UnaryRemoval),
            vec!["x = a\n"]
        );
        assert_eq!(
            edits_of("x = +a\n", Operator::UnaryRemoval),
            Vec::<String>::new()
        );
        assert_eq!(
            edits_of("x += 2\n", Operator::AugmentedAssignment),
            vec!["x -= 2\n"]
        );
        assert_eq!(
            edits_of("x //= 2\n", Operator::AugmentedAssignment),
            vec!["x /= 2\n"]
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(edits_of("x = 0\n", Operator::Number), vec!["x = 1\n"]);
        assert_eq!(edits_of("x = 1\n", Operator::Number), vec!["x = 0\n"]);
        assert_eq!(edits_of("x = 41\n", Operator::Number), vec!["x = 42\n"]);
        assert_eq!(edits_of("x = 0x10\n", Operator::Number), vec!["x = 17\n"]);
        assert_eq!(edits_of("x = 2.5\n", Operator::Number), vec!["x = 3.5\n"]);
    }

    #[test]
    fn constants_and_strings() {
        assert_eq!(
            edits_of("x = True\n", Operator::BooleanConstant),
            vec!["x = False\n"]
        );
        assert_eq!(
            edits_of("x = 'ab'\n", Operator::StringConstant),
            vec!["x = 'XXabXX'\n"]
        );
        assert_eq!(
            edits_of("x = f'a{b}'\n", Operator::StringConstant),
            vec!["x = f'XXa{b}XX'\n"]
        );
        assert_eq!(
            edits_of("x = b'ab'\n", Operator::StringConstant),
            Vec::<String>::new()
        );
    }

    #[test]
    fn return_break_and_deletion() {
        let code = "def f(xs):\n    for x in xs:\n        if x:\n            break\n        g(x)\n    return x\n";
        assert_eq!(
            edits_of(code, Operator::ReturnValue),
            vec![code.replace("return x", "return None")]
        );
        assert_eq!(
            edits_of(code, Operator::BreakContinue),
            vec![code.replace("break", "continue")]
        );
        assert_eq!(
            edits_of(code, Operator::StatementDeletion),
            vec![code.replace("g(x)", "pass")]
        );
        assert_eq!(
            edits_of("def f():\n    return None\n", Operator::ReturnValue),
            Vec::<String>::new()
        );
    }

    #[test]
    fn skips_docstrings_annotations_pragmas_and_main_guard() {
        let code = "\"\"\"doc\"\"\"\ndef f(a: int = 1) -> int:\n    \"\"\"Add 1.\"\"\"\n    return a + 1  # pragma: no mutate\n\nif __name__ == '__main__':\n    print(f(2))\n";
        let source = PythonSource::parse("code", code).unwrap();
        let edits = candidate_edits(&source, &Operator::ALL);
        let touched: Vec<&str> = edits.iter().map(|e| &code[e.start..e.end]).collect();
        // Only the default value `1` is left: the annotation, docstrings, pragma line and the
        // main guard are skipped.
        assert_eq!(touched, vec!["1"], "{edits:?}");
    }
}
