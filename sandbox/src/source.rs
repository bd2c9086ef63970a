//! Parsed Python source: the one place that turns text into a tree-sitter tree.
//!
//! Mutants, variants and suite facts all start here. Parsing never panics: unparsable input
//! becomes a [`SourceError`] naming the first error's line and column (1-based), because model
//! output is often truncated mid-statement and the caller must be able to say exactly where.

use std::collections::HashSet;

use tree_sitter::{Node, Parser, Tree};

/// Why a piece of Python source cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
pub enum SourceError {
    #[error("{what} is empty")]
    Empty { what: String },
    #[error("{what} has a syntax error at line {line}, column {column}: {message}")]
    Syntax {
        what: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{what} could not be parsed")]
    Unparsable { what: String },
}

/// A Python module's text and its syntax tree.
pub struct PythonSource {
    text: String,
    tree: Tree,
}

impl std::fmt::Debug for PythonSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonSource")
            .field("bytes", &self.text.len())
            .finish()
    }
}

/// Parse without judging: `None` only if tree-sitter itself gives up.
pub(crate) fn parse_tree(text: &str) -> Option<Tree> {
    let mut parser = Parser::new();
    parser
        .set_language(&tree_sitter_python::LANGUAGE.into())
        .expect("the bundled tree-sitter-python grammar matches the tree-sitter runtime");
    parser.parse(text, None)
}

/// Whether `text` parses without any error node.
pub fn parses_cleanly(text: &str) -> bool {
    parse_tree(text).is_some_and(|tree| !tree.root_node().has_error())
}

impl PythonSource {
    /// Parse `text`; `what` names it in errors ("code under test", "test file").
    pub fn parse(what: &str, text: &str) -> Result<Self, SourceError> {
        if text.trim().is_empty() {
            return Err(SourceError::Empty { what: what.into() });
        }
        let tree = parse_tree(text).ok_or_else(|| SourceError::Unparsable { what: what.into() })?;
        if tree.root_node().has_error() {
            let (line, column, message) = first_error(tree.root_node(), text);
            return Err(SourceError::Syntax {
                what: what.into(),
                line,
                column,
                message,
            });
        }
        Ok(Self {
            text: text.to_owned(),
            tree,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn root(&self) -> Node<'_> {
        self.tree.root_node()
    }

    /// The source text of `node`.
    pub fn node_text(&self, node: Node<'_>) -> &str {
        &self.text[node.byte_range()]
    }

    /// Lines (0-based) carrying a `# pragma: no mutate` comment.
    pub fn no_mutate_lines(&self) -> HashSet<usize> {
        let mut lines = HashSet::new();
        visit(self.root(), &mut |node| {
            if node.kind() == "comment" {
                let text = self.node_text(node).to_ascii_lowercase();
                if text.contains("pragma: no mutate") {
                    lines.insert(node.start_position().row);
                }
            }
            true
        });
        lines
    }
}

/// Depth-first pre-order walk; `f` returns whether to descend into the node's children.
pub fn visit<'t>(node: Node<'t>, f: &mut impl FnMut(Node<'t>) -> bool) {
    if !f(node) {
        return;
    }
    let mut cursor = node.walk();
    for child in node.children(&mut cursor) {
        visit(child, f);
    }
}

/// Whether `node` is a docstring: a string expression statement first in a module, class or
/// function body.
pub fn is_docstring(node: Node<'_>) -> bool {
    let statement = match node.kind() {
        "expression_statement" => node,
        "string" | "concatenated_string" => match node.parent() {
            Some(parent) if parent.kind() == "expression_statement" => parent,
            _ => return false,
        },
        _ => return false,
    };
    if statement.named_child_count() != 1 {
        return false;
    }
    let Some(only) = statement.named_child(0) else {
        return false;
    };
    if !matches!(only.kind(), "string" | "concatenated_string") {
        return false;
    }
    let Some(body) = statement.parent() else {
        return false;
    };
    let first_statement = {
        let mut cursor = body.walk();
        let first = body
            .named_children(&mut cursor)
            .find(|child| child.kind() != "comment");
        first
    };
    if first_statement != Some(statement) {
        return false;
    }
    match body.kind() {
        "module" => true,
        "block" => body.parent().is_some_and(|owner| {
            matches!(owner.kind(), "function_definition" | "class_definition")
        }),
        _ => false,
    }
}

/// Whether `node` lies inside a type annotation (parameter type, return type, annotated
/// assignment type), where a mutation would change nothing at run time.
pub fn in_annotation(node: Node<'_>) -> bool {
    let mut child = node;
    while let Some(parent) = child.parent() {
        let is_type_field = matches!(
            parent.kind(),
            "typed_parameter" | "typed_default_parameter" | "assignment" | "function_definition"
        ) && [
            parent.child_by_field_name("type"),
            parent.child_by_field_name("return_type"),
        ]
        .contains(&Some(child));
        if is_type_field || child.kind() == "type" {
            return true;
        }
        child = parent;
    }
    false
}

/// Whether `node` is inside an `if __name__ == "__main__":` block, which tests never run.
pub fn in_main_guard(source: &PythonSource, node: Node<'_>) -> bool {
    let mut current = node.parent();
    while let Some(parent) = current {
        if parent.kind() == "if_statement" && parent.parent().is_some_and(|p| p.kind() == "module")
        {
            if let Some(condition) = parent.child_by_field_name("condition") {
                let text: String = source
                    .node_text(condition)
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                if text == "__name__=='__main__'" || text == "__name__==\"__main__\"" {
                    return true;
                }
            }
        }
        current = parent.parent();
    }
    false
}

fn first_error(root: Node<'_>, text: &str) -> (usize, usize, String) {
    let mut found: Option<Node<'_>> = None;
    visit(root, &mut |node| {
        if found.is_some() {
            return false;
        }
        if node.is_error() || node.is_missing() {
            found = Some(node);
            return false;
        }
        node.has_error()
    });
    let Some(node) = found else {
        return (1, 1, "invalid syntax".into());
    };
    let position = node.start_position();
    let line_text = text.lines().nth(position.row).unwrap_or("");
    let column = line_text
        .get(..position.column.min(line_text.len()))
        .map_or(position.column, |prefix| prefix.chars().count())
        + 1;
    let message = if node.is_missing() {
        format!("missing `{}`", node.kind())
    } else {
        let snippet: String = text[node.byte_range()].chars().take(40).collect();
        format!(
            "unexpected `{}`",
            snippet.lines().next().unwrap_or("").trim()
        )
    };
    (position.row + 1, column, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_error_names_line_and_column() {
        let err = PythonSource::parse("code", "def f(x):\n    return x +\n").unwrap_err();
        match err {
            SourceError::Syntax { line, .. } => assert_eq!(line, 2),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn empty_is_an_error() {
        assert_eq!(
            PythonSource::parse("test file", " \n\n").unwrap_err(),
            SourceError::Empty {
                what: "test file".into()
            }
        );
    }

    #[test]
    fn docstrings_are_recognised_only_in_first_position() {
        let src = PythonSource::parse(
            "code",
            "\"\"\"mod\"\"\"\ndef f():\n    \"\"\"doc\"\"\"\n    x = 'not doc'\n    'also not'\n",
        )
        .unwrap();
        let mut docstrings = Vec::new();
        visit(src.root(), &mut |node| {
            if node.kind() == "string" && is_docstring(node) {
                docstrings.push(src.node_text(node).to_string());
            }
            true
        });
        assert_eq!(docstrings, vec!["\"\"\"mod\"\"\"", "\"\"\"doc\"\"\""]);
    }
}
