//! Text families: counting, reversing, encoding and reshaping strings — each written several
//! ways, with expected values from a Rust model of the function.

use crate::data::corpus::spec::{case, spec, text, Gen, Py, Spec, PALINDROMES, WORDS};

pub(crate) fn count_vowels(g: &mut Gen) -> Spec {
    let f = g.pick(&["count_vowels", "vowel_count", "num_vowels"]);
    let s = g.pick(&["text", "word", "s"]);
    let vowels = if g.chance(0.7) { "aeiou" } else { "aeiouy" };
    let doc = g.docstring(&format!(
        "Count the vowels ({vowels}) in {s}, ignoring case."
    ));
    let body = if g.chance(0.5) {
        format!("    return sum(1 for ch in {s}.lower() if ch in \"{vowels}\")\n")
    } else {
        format!("    count = 0\n    for ch in {s}.lower():\n        if ch in \"{vowels}\":\n            count += 1\n    return count\n")
    };
    let code = format!("def {f}({s}):\n{doc}{body}");
    let count = |t: &str| {
        t.to_lowercase()
            .chars()
            .filter(|c| vowels.contains(*c))
            .count() as i64
    };
    let mut cases = Vec::new();
    for _ in 0..3 {
        let mut t = g.sentence((1, 3));
        if g.chance(0.4) {
            t = t.to_uppercase();
        }
        cases.push(case("words", f, vec![text(&t)], Py::Int(count(&t))));
    }
    cases.push(case("empty", f, vec![text("")], Py::Int(0)));
    cases.push(case(
        "no_vowels",
        f,
        vec![text("rhythm")],
        Py::Int(count("rhythm")),
    ));
    spec(f, &[s], code, cases)
}

pub(crate) fn reverse_words(g: &mut Gen) -> Spec {
    let f = g.pick(&["reverse_words", "flip_words", "words_backwards"]);
    let s = g.pick(&["sentence", "text", "line"]);
    let doc = g.docstring("Return the words of the sentence in reverse order.");
    let body = if g.chance(0.5) {
        format!("    return \" \".join(reversed({s}.split()))\n")
    } else {
        format!("    words = {s}.split()\n    words.reverse()\n    return \" \".join(words)\n")
    };
    let code = format!("def {f}({s}):\n{doc}{body}");
    let mut cases = Vec::new();
    for _ in 0..3 {
        let t = g.sentence((1, 5));
        let expected: Vec<&str> = t.split_whitespace().rev().collect();
        cases.push(case(
            "sentence",
            f,
            vec![text(&t)],
            text(&expected.join(" ")),
        ));
    }
    cases.push(case(
        "extra_spaces",
        f,
        vec![text("  one   two ")],
        text("two one"),
    ));
    cases.push(case("empty", f, vec![text("")], text("")));
    spec(f, &[s], code, cases)
}

pub(crate) fn palindrome(g: &mut Gen) -> Spec {
    let f = g.pick(&["is_palindrome", "palindrome", "reads_same_backwards"]);
    let s = g.pick(&["text", "phrase", "s"]);
    let doc =
        g.docstring("Whether the text reads the same backwards, ignoring case and punctuation.");
    let body = if g.chance(0.5) {
        format!("    cleaned = [ch.lower() for ch in {s} if ch.isalnum()]\n    return cleaned == cleaned[::-1]\n")
    } else {
        format!("    cleaned = \"\".join(ch.lower() for ch in {s} if ch.isalnum())\n    left, right = 0, len(cleaned) - 1\n    while left < right:\n        if cleaned[left] != cleaned[right]:\n            return False\n        left += 1\n        right -= 1\n    return True\n")
    };
    let code = format!("def {f}({s}):\n{doc}{body}");
    let is_pal = |t: &str| {
        let c: Vec<char> = t
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        c.iter().eq(c.iter().rev())
    };
    let mut cases = Vec::new();
    for _ in 0..2 {
        let t = g.pick(PALINDROMES);
        cases.push(case("palindromes", f, vec![text(t)], Py::Bool(true)));
    }
    for _ in 0..2 {
        let t = g.pick(WORDS);
        cases.push(case("other_words", f, vec![text(t)], Py::Bool(is_pal(t))));
    }
    cases.push(case("empty", f, vec![text("")], Py::Bool(true)));
    spec(f, &[s], code, cases)
}

pub(crate) fn run_length(g: &mut Gen) -> Spec {
    let f = g.pick(&["run_length_encode", "rle", "compress_runs"]);
    let s = g.pick(&["text", "s", "data"]);
    let as_pairs = g.chance(0.5);
    let doc = g.docstring(if as_pairs {
        "Encode runs of equal characters as (character, count) pairs."
    } else {
        "Encode runs of equal characters as character followed by count."
    });
    let emit = if as_pairs {
        "result.append((current, count))"
    } else {
        "result.append(current + str(count))"
    };
    let finish = if as_pairs {
        "result"
    } else {
        "\"\".join(result)"
    };
    let code = format!(
        "def {f}({s}):\n{doc}    result = []\n    if not {s}:\n        return {finish}\n    current, count = {s}[0], 1\n    for ch in {s}[1:]:\n        if ch == current:\n            count += 1\n        else:\n            {emit}\n            current, count = ch, 1\n    {emit}\n    return {finish}\n"
    );
    let model = |t: &str| {
        let mut runs: Vec<(char, i64)> = Vec::new();
        for c in t.chars() {
            match runs.last_mut() {
                Some((last, n)) if *last == c => *n += 1,
                _ => runs.push((c, 1)),
            }
        }
        if as_pairs {
            Py::List(
                runs.iter()
                    .map(|(c, n)| Py::Tuple(vec![text(&c.to_string()), Py::Int(*n)]))
                    .collect(),
            )
        } else {
            text(
                &runs
                    .iter()
                    .map(|(c, n)| format!("{c}{n}"))
                    .collect::<String>(),
            )
        }
    };
    let mut cases = Vec::new();
    for _ in 0..3 {
        let t: String = (0..g.int(2, 5))
            .map(|_| g.pick(&["a", "b", "c", "x"]).repeat(g.int(1, 4) as usize))
            .collect();
        cases.push(case("runs", f, vec![text(&t)], model(&t)));
    }
    cases.push(case("empty", f, vec![text("")], model("")));
    spec(f, &[s], code, cases)
}

pub(crate) fn caesar(g: &mut Gen) -> Spec {
    let f = g.pick(&["caesar", "shift_letters", "rotate_text"]);
    let (s, k) = (g.pick(&["text", "message"]), g.pick(&["shift", "key"]));
    let doc = g.docstring("Shift lowercase letters around the alphabet; other characters stay.");
    let code = format!(
        "def {f}({s}, {k}):\n{doc}    out = []\n    for ch in {s}:\n        if \"a\" <= ch <= \"z\":\n            out.append(chr((ord(ch) - ord(\"a\") + {k}) % 26 + ord(\"a\")))\n        else:\n            out.append(ch)\n    return \"\".join(out)\n"
    );
    let model = |t: &str, shift: i64| -> String {
        t.chars()
            .map(|c| {
                if c.is_ascii_lowercase() {
                    (((c as i64 - 97 + shift).rem_euclid(26)) as u8 + 97) as char
                } else {
                    c
                }
            })
            .collect()
    };
    let mut cases = Vec::new();
    for _ in 0..3 {
        let t = g.sentence((1, 3));
        let shift = g.int(-30, 30);
        cases.push(case(
            "shifted",
            f,
            vec![text(&t), Py::Int(shift)],
            text(&model(&t, shift)),
        ));
    }
    cases.push(case("wraps", f, vec![text("xyz"), Py::Int(3)], text("abc")));
    cases.push(case(
        "keeps_other_characters",
        f,
        vec![text("Hi, you!"), Py::Int(1)],
        text(&model("Hi, you!", 1)),
    ));
    spec(f, &[s, k], code, cases)
}

pub(crate) fn word_lengths(g: &mut Gen) -> Spec {
    let f = g.pick(&["word_lengths", "length_by_word", "measure_words"]);
    let s = g.pick(&["sentence", "text"]);
    let doc = g.docstring("Map each word of the sentence to its length.");
    let body = if g.chance(0.5) {
        format!("    return {{word: len(word) for word in {s}.split()}}\n")
    } else {
        format!("    lengths = {{}}\n    for word in {s}.split():\n        lengths[word] = len(word)\n    return lengths\n")
    };
    let code = format!("def {f}({s}):\n{doc}{body}");
    let model = |t: &str| {
        let mut out: Vec<(Py, Py)> = Vec::new();
        for w in t.split_whitespace() {
            if !out.iter().any(|(k, _)| *k == text(w)) {
                out.push((text(w), Py::Int(w.len() as i64)));
            }
        }
        Py::Dict(out)
    };
    let mut cases = Vec::new();
    for _ in 0..3 {
        let t = g.sentence((1, 4));
        cases.push(case("sentence", f, vec![text(&t)], model(&t)));
    }
    cases.push(case("empty", f, vec![text("")], Py::Dict(vec![])));
    spec(f, &[s], code, cases)
}

pub(crate) fn title_case(g: &mut Gen) -> Spec {
    let f = g.pick(&["title_case", "capitalize_words", "headline"]);
    let s = g.pick(&["text", "phrase"]);
    let doc = g.docstring("Capitalise the first letter of each word and lower-case the rest.");
    let code = format!("def {f}({s}):\n{doc}    return \" \".join(w[:1].upper() + w[1:].lower() for w in {s}.split())\n");
    let model = |t: &str| {
        t.split_whitespace()
            .map(|w| w[..1].to_uppercase() + &w[1..].to_lowercase())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut cases = Vec::new();
    for _ in 0..3 {
        let mut t = g.sentence((1, 4));
        if g.chance(0.5) {
            t = t.to_uppercase();
        }
        cases.push(case("words", f, vec![text(&t)], text(&model(&t))));
    }
    cases.push(case("empty", f, vec![text("")], text("")));
    spec(f, &[s], code, cases)
}
