"""From a model's completion to the test file the sandbox scores.

The same algorithm as the Rust trainer's ``extract_tests`` (sandbox/src/completion.rs,
docs/prompts.md):

1. keep the text before the first end marker;
2. if there is a fence (```python, ```py or a bare ```), the first fenced block, to its closing
   fence or, cut off by a length limit, to the end;
3. otherwise the text from the first line that starts Python code (``import``, ``from``, ``def``,
   ``class``, ``@``, ``#``, ``async def``); if that does not parse, the longest prefix ending at
   a blank line that does. Code that parses is never cut; text that parses nowhere is returned
   whole, and the sandbox reports its syntax error.
"""

from __future__ import annotations

import ast
import warnings

END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>")
_FENCES = ("```python\n", "```py\n", "```\n")
_CODE_STARTS = ("import ", "from ", "def ", "class ", "@", "#", "async def ")


def _parses(text: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return True


def _rust_lines(text: str) -> list[str]:
    """Lines as Rust's ``str::lines`` gives them: split at \\n, a trailing \\r dropped."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def extract_tests(completion: str) -> str:
    """The test file in ``completion`` (a string ending in one newline)."""
    text = completion
    for marker in END_MARKERS:
        text = text.split(marker, 1)[0]
    for fence in _FENCES:
        start = text.find(fence)
        if start >= 0:
            body = text[start + len(fence) :]
            return body.split("```", 1)[0].rstrip() + "\n"
    lines = _rust_lines(text)
    code_start = next((i for i, line in enumerate(lines) if line.startswith(_CODE_STARTS)), 0)
    code = lines[code_start:]
    whole = "\n".join(code).strip() + "\n"
    if _parses(whole):
        return whole
    for end in range(len(code) - 1, 0, -1):
        if code[end].strip():
            continue
        prefix = "\n".join(code[:end]).strip() + "\n"
        if len(prefix.strip()) > 1 and _parses(prefix):
            return prefix
    return whole
