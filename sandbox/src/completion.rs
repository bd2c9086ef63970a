//! From a model's completion to the test file the sandbox scores: cut at the end marker, take the
//! fenced block, or drop the chatter around unfenced code. The trainer (GRPO, `generate`,
//! `eval`), the service's OpenRLHF endpoint and the Python adapters all use this algorithm
//! (docs/prompts.md).

use crate::source::parses_cleanly;

/// Tokens that end a chat turn or a document in the usual model families.
pub const END_MARKERS: [&str; 4] = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>"];

/// The test file in a completion, as the sandbox will score it:
///
/// 1. the text before the first end marker ([`END_MARKERS`]);
/// 2. the first fenced block (```` ```python ````, ```` ```py ````, a bare ```` ``` ````), to
///    its closing fence or, cut off by the length limit, to the end;
/// 3. without a fence, the text from the first line that starts Python code (`import`, `from`,
///    `def`, `class`, `@`, `#`, `async def`), dropping chatter before it; and if that does not
///    parse, the longest prefix ending at a blank line that does, dropping chatter after the
///    code. Code that parses is never cut; text that parses nowhere is returned whole (the
///    sandbox then reports its syntax error).
pub fn extract_tests(completion: &str) -> String {
    let text = END_MARKERS.iter().fold(completion, |text, marker| {
        text.split(marker).next().unwrap_or(text)
    });
    for fence in ["```python\n", "```py\n", "```\n"] {
        if let Some(start) = text.find(fence) {
            let body = &text[start + fence.len()..];
            return body
                .split("```")
                .next()
                .unwrap_or(body)
                .trim_end()
                .to_string()
                + "\n";
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    let code_start = lines.iter().position(|line| starts_code(line)).unwrap_or(0);
    let code = &lines[code_start..];
    let whole = code.join("\n").trim().to_string() + "\n";
    if parses_cleanly(&whole) {
        return whole;
    }
    // Trailing chatter: the longest prefix that ends at a blank line and parses.
    (1..code.len())
        .rev()
        .filter(|&end| code[end].trim().is_empty())
        .map(|end| code[..end].join("\n").trim().to_string() + "\n")
        .find(|prefix| prefix.trim().len() > 1 && parses_cleanly(prefix))
        .unwrap_or(whole)
}

/// Whether a line opens Python code at the top level of a test file.
fn starts_code(line: &str) -> bool {
    ["import ", "from ", "def ", "class ", "@", "#", "async def "]
        .iter()
        .any(|start| line.starts_with(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_end_markers_and_chatter() {
        assert_eq!(
            extract_tests("Here:\n```python\ndef test_a():\n    assert 1\n```\nDone."),
            "def test_a():\n    assert 1\n"
        );
        assert_eq!(
            extract_tests("def test_b():\n    pass\n<|im_end|>junk"),
            "def test_b():\n    pass\n"
        );
        assert_eq!(
            extract_tests("def test_b():\n    pass\n</s>"),
            "def test_b():\n    pass\n"
        );
        // Cut off by the length limit inside the fence: everything after the fence.
        assert_eq!(
            extract_tests("```python\nimport pytest\n\ndef test_c():\n    assert"),
            "import pytest\n\ndef test_c():\n    assert\n"
        );
        // Chatter before and after unfenced code goes; the code stays as written.
        let chatty = "Sure! Here are the tests for `m`.\n\nfrom m import f\n\n\ndef test_f():\n    assert f(1) == 2\n\nThese tests check that f adds one.\nThey are fast.";
        assert_eq!(
            extract_tests(chatty),
            "from m import f\n\n\ndef test_f():\n    assert f(1) == 2\n"
        );
        // Code that parses is never cut, blank lines and comments included.
        let code = "# tests\nimport pytest\n\n\ndef test_a():\n    x = 1\n\n    assert x == 1\n";
        assert_eq!(extract_tests(code), code);
        // Nothing parses: returned whole, for the sandbox to report.
        assert_eq!(
            extract_tests("def test_(:\n\nmore"),
            "def test_(:\n\nmore\n"
        );
    }

    #[test]
    fn the_cases_the_python_client_checks_too() {
        // The same fixture the Python adapters' tests read, so the two implementations agree.
        let cases: serde_json::Value = serde_json::from_str(include_str!(
            "../../clients/python/tests/extract_cases.json"
        ))
        .unwrap();
        for case in cases["cases"].as_array().unwrap() {
            let completion = case["completion"].as_str().unwrap();
            assert_eq!(
                extract_tests(completion),
                case["tests"].as_str().unwrap(),
                "{completion:?}"
            );
        }
    }
}
