#!/usr/bin/env python3
"""Golden token ids for the SmolLM2 tokenizer from an independent implementation: llama.cpp's own
tokenizer, through llama-cpp-python (`pip install llama-cpp-python`, which builds llama.cpp from
source), reading only the vocabulary of the GGUF file (vocab_only=True).

    python3 scripts/tokenizer-golden.py models/SmolLM2-135M-Instruct.Q4_1.gguf \
        > trainer/tests/fixtures/smollm2_tokens.json

trainer/tests/smollm2.rs compares the tokenizer that `unitforge import-gguf` writes against this
fixture; CI needs only the fixture.
"""
import json
import sys

from llama_cpp import Llama

TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "import pytest\n\nfrom clamp import clamp\n\n\ndef test_low():\n    assert clamp(-5, 0, 10) == 0\n",
    "class Stack:\n\tdef push(self, item):\n\t\tself.items.append(item)\n",
    "    if x  >=  10:\n        y = x // 3  # floor\n",
    "@pytest.mark.parametrize(\"value, expected\", [(1, 2), (10, 20), (-3, -6)])\n",
    "with pytest.raises(ValueError, match=r\"low must not exceed high\"):\n    clamp(1, 5, 0)\n",
    "12345678901234567890",
    "3.14159 2.71828 1e-9 0x1F 0b1010 1_000_000",
    "x=[1,2,3];y={'a':1,\"b\":[None,True,False]}",
    "  leading spaces and trailing   ",
    "\n\n\nthree newlines then text\r\nwith CRLF\r\n",
    "tabs\there\tand\t\tthere",
    "Ünïcödé: café, naïve, Straße, smörgåsbord",
    "日本語のテキストと中文文本",
    "emoji 🐍🦀 and symbols ∑∫√≠≤≥",
    "Привет, мир! Γειά σου Κόσμε",
    "mixed: 'single' \"double\" `back` \\backslash\\",
    "f\"{value!r:>10}\" and b'bytes\\x00'",
    "assert grade(87) == \"A\"\nassert grade(76) == \"C\"\n",
    "def test_reverse_words():\n    assert reverse_words(\"apple banana\") == \"banana apple\"\n",
    "<|im_start|>system\nYou are a careful Python engineer.<|im_end|>\n",
    "<|im_start|>user\nWrite pytest unit tests for the module `m`.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>assistant\n```python\nimport pytest\n```<|im_end|>",
    "<|endoftext|>after end of text",
    "text<|im_end|>more<|im_start|>",
    "don't can't we'll they're I'm you've he'd",
    "CamelCaseIdentifier snake_case_identifier SCREAMING_CASE",
    "    \n    \n",
    "a" * 50,
    "lambda x: x ** 2 if x % 2 == 0 else -x",
    "# comment with URL https://example.com/path?q=1&r=2",
    "\"\"\"Docstring.\n\n    Args:\n        n: a number.\n    \"\"\"",
    " ",
    "",
]

def main() -> None:
    llm = Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
    rows = []
    for text in TEXTS:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        rows.append({"text": text, "ids": ids})
    json.dump({"source": "llama.cpp via llama-cpp-python, vocab_only", "cases": rows}, sys.stdout,
              ensure_ascii=False, indent=1)
    sys.stdout.write("\n")

if __name__ == "__main__":
    main()
