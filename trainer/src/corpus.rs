//! The synthetic SFT corpus: (code under test → pytest file) pairs from varied function families.
//!
//! Each family is a small Python function (or class) written several ways — names, parameter
//! names, loop or built-in, docstring or not — together with this file's own Rust model of what it
//! returns. The expected values in the generated tests come from the Rust model, never from running
//! the Python, so when the scorer later runs every pair (`unitforge data generate` does) a pass is
//! an independent check that the two agree; a pair that fails is dropped and counted. The tests
//! are rendered in a few styles (one test per behaviour, `parametrize`, `pytest.raises`, scripts
//! of method calls) so the model sees the shapes of real test files.

use std::collections::HashSet;
use std::fmt;

use unitforge_sandbox::rng::SplitMix64;

/// A Python literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Py {
    Int(i64),
    Str(String),
    Bool(bool),
    None,
    List(Vec<Py>),
    Tuple(Vec<Py>),
    Dict(Vec<(Py, Py)>),
}

impl fmt::Display for Py {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn join(items: &[Py]) -> String {
            items
                .iter()
                .map(Py::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
        match self {
            Py::Int(n) => write!(f, "{n}"),
            Py::Str(s) => write!(f, "\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
            Py::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            Py::None => f.write_str("None"),
            Py::List(items) => write!(f, "[{}]", join(items)),
            Py::Tuple(items) if items.len() == 1 => write!(f, "({},)", items[0]),
            Py::Tuple(items) => write!(f, "({})", join(items)),
            Py::Dict(items) => {
                let inner: Vec<String> = items.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                write!(f, "{{{}}}", inner.join(", "))
            }
        }
    }
}

fn ints(values: &[i64]) -> Py {
    Py::List(values.iter().map(|&n| Py::Int(n)).collect())
}

fn text(s: &str) -> Py {
    Py::Str(s.to_string())
}

/// What a call must do.
#[derive(Debug, Clone)]
enum Expect {
    Value(Py),
    Raises(&'static str),
}

/// One checked call of a module function, grouped into tests by `label`.
#[derive(Debug, Clone)]
struct Case {
    label: &'static str,
    function: String,
    args: Vec<Py>,
    expect: Expect,
}

/// A test written out as statements (for classes, whose behaviour is a sequence of calls).
#[derive(Debug, Clone)]
struct Script {
    name: String,
    lines: Vec<String>,
    raises: bool,
}

/// One family's instance: the module's code and what its tests check.
#[derive(Debug, Clone, Default)]
struct Spec {
    imports: Vec<String>,
    names: Vec<String>,
    code: String,
    params: Vec<String>,
    cases: Vec<Case>,
    scripts: Vec<Script>,
}

/// One generated pair.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedPair {
    pub family: &'static str,
    pub module: String,
    pub code: String,
    pub tests: String,
}

struct Gen<'a>(&'a mut SplitMix64);

impl Gen<'_> {
    fn pick<'s>(&mut self, items: &[&'s str]) -> &'s str {
        items[self.0.below(items.len())]
    }
    fn int(&mut self, low: i64, high: i64) -> i64 {
        low + self.0.below((high - low + 1) as usize) as i64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.0.uniform() < p
    }
    fn ints(&mut self, len: (usize, usize), low: i64, high: i64) -> Vec<i64> {
        let n = len.0 + self.0.below(len.1 - len.0 + 1);
        (0..n).map(|_| self.int(low, high)).collect()
    }
    fn words(&mut self, len: (usize, usize)) -> Vec<&'static str> {
        let n = len.0 + self.0.below(len.1 - len.0 + 1);
        (0..n).map(|_| self.pick(WORDS)).collect()
    }
    fn sentence(&mut self, len: (usize, usize)) -> String {
        self.words(len).join(" ")
    }
    fn docstring(&mut self, text: &str) -> String {
        if self.chance(0.5) {
            format!("    \"\"\"{text}\"\"\"\n")
        } else {
            String::new()
        }
    }
}

const WORDS: &[&str] = &[
    "apple", "banana", "cherry", "delta", "echo", "river", "stone", "cloud", "tiger", "lemon",
    "paper", "green", "orbit", "pixel", "maple", "quartz", "north", "salt", "vivid", "zebra",
    "table", "music", "ocean", "light", "queue", "union", "yacht", "igloo", "amber", "frost",
];

const PALINDROMES: &[&str] = &[
    "level",
    "radar",
    "civic",
    "rotor",
    "kayak",
    "Racecar",
    "Never odd or even",
    "Was it a car or a cat I saw",
    "A man, a plan, a canal: Panama",
    "No lemon, no melon",
];

fn case(label: &'static str, function: &str, args: Vec<Py>, expect: Py) -> Case {
    Case {
        label,
        function: function.to_string(),
        args,
        expect: Expect::Value(expect),
    }
}

fn raises(label: &'static str, function: &str, args: Vec<Py>, error: &'static str) -> Case {
    Case {
        label,
        function: function.to_string(),
        args,
        expect: Expect::Raises(error),
    }
}

fn spec(name: &str, params: &[&str], code: String, cases: Vec<Case>) -> Spec {
    Spec {
        names: vec![name.to_string()],
        params: params.iter().map(|p| p.to_string()).collect(),
        code,
        cases,
        ..Spec::default()
    }
}

fn clamp(g: &mut Gen) -> Spec {
    let f = g.pick(&["clamp", "bound", "limit", "clip_value"]);
    let (v, lo, hi) = (g.pick(&["value", "x", "n"]), "low", "high");
    let checked = g.chance(0.5);
    let doc = g.docstring(&format!("Return {v} limited to the range [{lo}, {hi}]."));
    let check = if checked {
        format!("    if {lo} > {hi}:\n        raise ValueError(\"{lo} must not exceed {hi}\")\n")
    } else {
        String::new()
    };
    let body = if g.chance(0.5) {
        format!("    return max({lo}, min({v}, {hi}))\n")
    } else {
        format!("    if {v} < {lo}:\n        return {lo}\n    if {v} > {hi}:\n        return {hi}\n    return {v}\n")
    };
    let code = format!("def {f}({v}, {lo}, {hi}):\n{doc}{check}{body}");
    let low = g.int(-20, 10);
    let high = low + g.int(1, 30);
    let mut cases = vec![
        case(
            "inside",
            f,
            vec![Py::Int(low + 1), Py::Int(low), Py::Int(high)],
            Py::Int(low + 1),
        ),
        case(
            "below",
            f,
            vec![Py::Int(low - g.int(1, 9)), Py::Int(low), Py::Int(high)],
            Py::Int(low),
        ),
        case(
            "above",
            f,
            vec![Py::Int(high + g.int(1, 9)), Py::Int(low), Py::Int(high)],
            Py::Int(high),
        ),
        case(
            "edges",
            f,
            vec![Py::Int(high), Py::Int(low), Py::Int(high)],
            Py::Int(high),
        ),
    ];
    if checked {
        cases.push(raises(
            "inverted_range",
            f,
            vec![Py::Int(0), Py::Int(high), Py::Int(low)],
            "ValueError",
        ));
    }
    spec(f, &[v, lo, hi], code, cases)
}

fn sum_multiples(g: &mut Gen) -> Spec {
    let f = g.pick(&["sum_multiples", "total_divisible", "sum_of_multiples"]);
    let (xs, k) = (
        g.pick(&["numbers", "values", "items"]),
        g.pick(&["k", "divisor", "factor"]),
    );
    let doc = g.docstring(&format!(
        "Sum the elements of {xs} that are multiples of {k}."
    ));
    let body = if g.chance(0.5) {
        format!("    return sum(n for n in {xs} if n % {k} == 0)\n")
    } else {
        format!("    total = 0\n    for n in {xs}:\n        if n % {k} == 0:\n            total += n\n    return total\n")
    };
    let code = format!("def {f}({xs}, {k}):\n{doc}{body}");
    let divisor = g.int(2, 6);
    let mut cases = Vec::new();
    for _ in 0..3 {
        let values = g.ints((3, 7), -10, 40);
        let total: i64 = values.iter().filter(|&&n| n % divisor == 0).sum();
        cases.push(case(
            "mixed",
            f,
            vec![ints(&values), Py::Int(divisor)],
            Py::Int(total),
        ));
    }
    cases.push(case(
        "empty",
        f,
        vec![ints(&[]), Py::Int(divisor)],
        Py::Int(0),
    ));
    spec(f, &[xs, k], code, cases)
}

fn count_vowels(g: &mut Gen) -> Spec {
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

fn reverse_words(g: &mut Gen) -> Spec {
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

fn palindrome(g: &mut Gen) -> Spec {
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

fn fizzbuzz(g: &mut Gen) -> Spec {
    let f = g.pick(&["fizzbuzz", "label", "describe_number"]);
    let n = g.pick(&["n", "number", "value"]);
    let a = g.int(2, 4);
    let b = a + g.int(1, 3);
    let (wa, wb) = match g.0.below(3) {
        0 => ("Fizz", "Buzz"),
        1 => ("Foo", "Bar"),
        _ => ("Ping", "Pong"),
    };
    let doc = g.docstring(&format!(
        "{wa} for multiples of {a}, {wb} for multiples of {b}, both for both."
    ));
    let body = if g.chance(0.5) {
        format!("    if {n} % {a} == 0 and {n} % {b} == 0:\n        return \"{wa}{wb}\"\n    if {n} % {a} == 0:\n        return \"{wa}\"\n    if {n} % {b} == 0:\n        return \"{wb}\"\n    return str({n})\n")
    } else {
        format!("    out = \"\"\n    if {n} % {a} == 0:\n        out += \"{wa}\"\n    if {n} % {b} == 0:\n        out += \"{wb}\"\n    return out or str({n})\n")
    };
    let code = format!("def {f}({n}):\n{doc}{body}");
    let model = |x: i64| {
        let mut out = String::new();
        if x % a == 0 {
            out += wa;
        }
        if x % b == 0 {
            out += wb;
        }
        if out.is_empty() {
            x.to_string()
        } else {
            out
        }
    };
    let mut cases = Vec::new();
    for x in [a * b, a, b, a * b + 1, g.int(1, 50)] {
        let label = match (x % a == 0, x % b == 0) {
            (true, true) => "both",
            (true, false) => "first",
            (false, true) => "second",
            _ => "neither",
        };
        cases.push(case(label, f, vec![Py::Int(x)], text(&model(x))));
    }
    spec(f, &[n], code, cases)
}

fn running_total(g: &mut Gen) -> Spec {
    let f = g.pick(&["running_total", "prefix_sums", "cumulative_sum"]);
    let xs = g.pick(&["numbers", "values", "amounts"]);
    let doc = g.docstring("Return the running totals of the numbers.");
    let mut imports = Vec::new();
    let body = if g.chance(0.4) {
        imports.push("from itertools import accumulate".to_string());
        format!("    return list(accumulate({xs}))\n")
    } else {
        format!("    totals = []\n    current = 0\n    for n in {xs}:\n        current += n\n        totals.append(current)\n    return totals\n")
    };
    let code = format!("def {f}({xs}):\n{doc}{body}");
    let mut cases = Vec::new();
    for _ in 0..3 {
        let values = g.ints((1, 6), -9, 20);
        let totals: Vec<i64> = values
            .iter()
            .scan(0, |acc, &n| {
                *acc += n;
                Some(*acc)
            })
            .collect();
        cases.push(case("values", f, vec![ints(&values)], ints(&totals)));
    }
    cases.push(case("empty", f, vec![ints(&[])], ints(&[])));
    Spec {
        imports,
        ..spec(f, &[xs], code, cases)
    }
}

fn spread(g: &mut Gen) -> Spec {
    let f = g.pick(&["spread", "value_range", "max_minus_min"]);
    let xs = g.pick(&["numbers", "values", "readings"]);
    let doc = g.docstring("Difference between the largest and smallest number.");
    let body = if g.chance(0.5) {
        format!("    if not {xs}:\n        raise ValueError(\"{xs} must not be empty\")\n    return max({xs}) - min({xs})\n")
    } else {
        format!("    if len({xs}) == 0:\n        raise ValueError(\"empty input\")\n    low = high = {xs}[0]\n    for n in {xs}:\n        low = min(low, n)\n        high = max(high, n)\n    return high - low\n")
    };
    let code = format!("def {f}({xs}):\n{doc}{body}");
    let mut cases = Vec::new();
    for _ in 0..3 {
        let values = g.ints((1, 6), -30, 30);
        let d = values.iter().max().unwrap() - values.iter().min().unwrap();
        cases.push(case("values", f, vec![ints(&values)], Py::Int(d)));
    }
    cases.push(case("single", f, vec![ints(&[g.int(-5, 5)])], Py::Int(0)));
    cases.push(raises("empty", f, vec![ints(&[])], "ValueError"));
    spec(f, &[xs], code, cases)
}

fn gcd(g: &mut Gen) -> Spec {
    let f = g.pick(&["gcd", "greatest_common_divisor", "common_factor"]);
    let (a, b) = if g.chance(0.5) {
        ("a", "b")
    } else {
        ("x", "y")
    };
    let doc = g.docstring("Greatest common divisor of two non-negative integers.");
    let body = if g.chance(0.5) {
        format!("    while {b}:\n        {a}, {b} = {b}, {a} % {b}\n    return {a}\n")
    } else {
        format!("    if {b} == 0:\n        return {a}\n    return {f}({b}, {a} % {b})\n")
    };
    let code = format!("def {f}({a}, {b}):\n{doc}{body}");
    fn model(a: i64, b: i64) -> i64 {
        if b == 0 {
            a
        } else {
            model(b, a % b)
        }
    }
    let mut cases = Vec::new();
    for _ in 0..3 {
        let k = g.int(1, 9);
        let (x, y) = (k * g.int(1, 12), k * g.int(1, 12));
        cases.push(case(
            "common",
            f,
            vec![Py::Int(x), Py::Int(y)],
            Py::Int(model(x, y)),
        ));
    }
    let x = g.int(1, 30);
    cases.push(case("zero", f, vec![Py::Int(x), Py::Int(0)], Py::Int(x)));
    cases.push(case(
        "coprime",
        f,
        vec![Py::Int(9), Py::Int(28)],
        Py::Int(1),
    ));
    spec(f, &[a, b], code, cases)
}

fn factorial(g: &mut Gen) -> Spec {
    let f = g.pick(&["factorial", "fact", "product_up_to"]);
    let n = g.pick(&["n", "k", "number"]);
    let doc = g.docstring(&format!("Return {n}! for a non-negative integer {n}."));
    let body = if g.chance(0.5) {
        format!("    result = 1\n    for i in range(2, {n} + 1):\n        result *= i\n    return result\n")
    } else {
        format!("    if {n} <= 1:\n        return 1\n    return {n} * {f}({n} - 1)\n")
    };
    let code = format!(
        "def {f}({n}):\n{doc}    if {n} < 0:\n        raise ValueError(\"negative input\")\n{body}"
    );
    let model = |k: i64| (1..=k).product::<i64>();
    let mut cases = vec![
        case("zero", f, vec![Py::Int(0)], Py::Int(1)),
        case("one", f, vec![Py::Int(1)], Py::Int(1)),
    ];
    for _ in 0..2 {
        let k = g.int(2, 12);
        cases.push(case("small", f, vec![Py::Int(k)], Py::Int(model(k))));
    }
    cases.push(raises(
        "negative",
        f,
        vec![Py::Int(-g.int(1, 5))],
        "ValueError",
    ));
    spec(f, &[n], code, cases)
}

fn dedupe(g: &mut Gen) -> Spec {
    let f = g.pick(&["dedupe", "unique_in_order", "remove_duplicates"]);
    let xs = g.pick(&["items", "values", "seq"]);
    let doc = g.docstring("Drop repeated items, keeping the first occurrence of each in order.");
    let body = if g.chance(0.5) {
        format!("    seen = set()\n    result = []\n    for item in {xs}:\n        if item not in seen:\n            seen.add(item)\n            result.append(item)\n    return result\n")
    } else {
        format!("    return list(dict.fromkeys({xs}))\n")
    };
    let code = format!("def {f}({xs}):\n{doc}{body}");
    fn model(values: &[Py]) -> Py {
        let mut out: Vec<Py> = Vec::new();
        for v in values {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        Py::List(out)
    }
    let mut cases = Vec::new();
    for _ in 0..2 {
        let values: Vec<Py> = g.ints((2, 8), 0, 5).into_iter().map(Py::Int).collect();
        cases.push(case(
            "numbers",
            f,
            vec![Py::List(values.clone())],
            model(&values),
        ));
    }
    let words: Vec<Py> = (0..5).map(|_| text(g.pick(&WORDS[..4]))).collect();
    cases.push(case(
        "words",
        f,
        vec![Py::List(words.clone())],
        model(&words),
    ));
    cases.push(case("empty", f, vec![Py::List(vec![])], Py::List(vec![])));
    spec(f, &[xs], code, cases)
}

fn run_length(g: &mut Gen) -> Spec {
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

fn caesar(g: &mut Gen) -> Spec {
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

/// Python's `//`: the floor of the quotient (Rust's `/` truncates, `div_euclid` keeps r ≥ 0).
fn floor_div(x: i64, y: i64) -> i64 {
    let q = x.div_euclid(y);
    if y < 0 && x.rem_euclid(y) != 0 {
        q - 1
    } else {
        q
    }
}

fn floor_divide(g: &mut Gen) -> Spec {
    let f = g.pick(&["safe_divide", "divide", "floor_div"]);
    let (a, b) = (
        g.pick(&["a", "numerator", "total"]),
        g.pick(&["b", "denominator", "parts"]),
    );
    let doc = g.docstring(&format!(
        "Floor division of {a} by {b}; a zero {b} is an error."
    ));
    let code = format!("def {f}({a}, {b}):\n{doc}    if {b} == 0:\n        raise ValueError(\"division by zero\")\n    return {a} // {b}\n");
    let mut cases = Vec::new();
    for _ in 0..4 {
        let (x, y) = (
            g.int(-50, 50),
            g.int(1, 9) * if g.chance(0.3) { -1 } else { 1 },
        );
        cases.push(case(
            "values",
            f,
            vec![Py::Int(x), Py::Int(y)],
            Py::Int(floor_div(x, y)),
        ));
    }
    cases.push(raises(
        "zero",
        f,
        vec![Py::Int(g.int(1, 9)), Py::Int(0)],
        "ValueError",
    ));
    spec(f, &[a, b], code, cases)
}

fn chunk(g: &mut Gen) -> Spec {
    let f = g.pick(&["chunk", "batched", "split_into_groups"]);
    let (xs, n) = (g.pick(&["items", "values"]), g.pick(&["size", "n"]));
    let doc = g.docstring(&format!(
        "Split {xs} into lists of {n} items; the last may be shorter."
    ));
    let body = if g.chance(0.5) {
        format!("    return [{xs}[i:i + {n}] for i in range(0, len({xs}), {n})]\n")
    } else {
        format!("    groups = []\n    for i in range(0, len({xs}), {n}):\n        groups.append({xs}[i:i + {n}])\n    return groups\n")
    };
    let code = format!("def {f}({xs}, {n}):\n{doc}    if {n} <= 0:\n        raise ValueError(\"size must be positive\")\n{body}");
    let mut cases = Vec::new();
    for _ in 0..3 {
        let values = g.ints((0, 7), 0, 9);
        let size = g.int(1, 4);
        let groups = Py::List(values.chunks(size as usize).map(ints).collect());
        cases.push(case(
            "groups",
            f,
            vec![ints(&values), Py::Int(size)],
            groups,
        ));
    }
    cases.push(raises(
        "bad_size",
        f,
        vec![ints(&[1, 2]), Py::Int(-g.int(0, 2))],
        "ValueError",
    ));
    spec(f, &[xs, n], code, cases)
}

fn word_lengths(g: &mut Gen) -> Spec {
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

fn discount(g: &mut Gen) -> Spec {
    let f = g.pick(&["apply_discount", "discounted_price", "reduce_price"]);
    let (p, d) = (
        g.pick(&["price_cents", "cents", "amount"]),
        g.pick(&["percent", "discount", "pct"]),
    );
    let doc = g.docstring(&format!(
        "Price after a {d}% discount, rounded down to whole cents."
    ));
    let code = format!("def {f}({p}, {d}):\n{doc}    if not 0 <= {d} <= 100:\n        raise ValueError(\"{d} must be between 0 and 100\")\n    return {p} * (100 - {d}) // 100\n");
    let mut cases = Vec::new();
    for _ in 0..3 {
        let (price, pct) = (g.int(0, 5000), g.int(0, 100));
        cases.push(case(
            "values",
            f,
            vec![Py::Int(price), Py::Int(pct)],
            Py::Int(price * (100 - pct) / 100),
        ));
    }
    let price = g.int(1, 900);
    cases.push(case(
        "no_discount",
        f,
        vec![Py::Int(price), Py::Int(0)],
        Py::Int(price),
    ));
    cases.push(case(
        "free",
        f,
        vec![Py::Int(price), Py::Int(100)],
        Py::Int(0),
    ));
    cases.push(raises(
        "out_of_range",
        f,
        vec![
            Py::Int(price),
            Py::Int(if g.chance(0.5) {
                101 + g.int(0, 50)
            } else {
                -g.int(1, 50)
            }),
        ],
        "ValueError",
    ));
    spec(f, &[p, d], code, cases)
}

fn digit_sum(g: &mut Gen) -> Spec {
    let f = g.pick(&["digit_sum", "sum_digits", "add_digits"]);
    let n = g.pick(&["n", "number", "value"]);
    let doc = g.docstring("Sum of the decimal digits of an integer (its sign ignored).");
    let body = if g.chance(0.5) {
        format!("    return sum(int(d) for d in str(abs({n})))\n")
    } else {
        format!("    {n} = abs({n})\n    total = 0\n    while {n}:\n        total += {n} % 10\n        {n} //= 10\n    return total\n")
    };
    let code = format!("def {f}({n}):\n{doc}{body}");
    let model = |x: i64| {
        x.abs()
            .to_string()
            .bytes()
            .map(|b| (b - b'0') as i64)
            .sum::<i64>()
    };
    let mut cases = vec![case("zero", f, vec![Py::Int(0)], Py::Int(0))];
    for _ in 0..3 {
        let x = g.int(1, 99999);
        cases.push(case("positive", f, vec![Py::Int(x)], Py::Int(model(x))));
    }
    let x = -g.int(1, 9999);
    cases.push(case("negative", f, vec![Py::Int(x)], Py::Int(model(x))));
    spec(f, &[n], code, cases)
}

fn fibonacci(g: &mut Gen) -> Spec {
    let f = g.pick(&["fibonacci", "fib", "nth_fibonacci"]);
    let n = g.pick(&["n", "index"]);
    let doc = g.docstring(&format!(
        "The {n}-th Fibonacci number, with fib(0) = 0 and fib(1) = 1."
    ));
    let code = format!("def {f}({n}):\n{doc}    if {n} < 0:\n        raise ValueError(\"index must be non-negative\")\n    a, b = 0, 1\n    for _ in range({n}):\n        a, b = b, a + b\n    return a\n");
    let model = |k: i64| (0..k).fold((0i64, 1i64), |(a, b), _| (b, a + b)).0;
    let mut cases = vec![
        case("base", f, vec![Py::Int(0)], Py::Int(0)),
        case("base", f, vec![Py::Int(1)], Py::Int(1)),
    ];
    for _ in 0..3 {
        let k = g.int(2, 40);
        cases.push(case("larger", f, vec![Py::Int(k)], Py::Int(model(k))));
    }
    cases.push(raises(
        "negative",
        f,
        vec![Py::Int(-g.int(1, 3))],
        "ValueError",
    ));
    spec(f, &[n], code, cases)
}

fn grade(g: &mut Gen) -> Spec {
    let f = g.pick(&["grade", "letter_grade", "score_to_letter"]);
    let s = g.pick(&["score", "points", "mark"]);
    let top = g.int(85, 95);
    let cuts = [top, top - 10, top - 20, top - 30];
    let doc = g.docstring(&format!("Letter grade for a {s} from 0 to 100."));
    let code = format!(
        "def {f}({s}):\n{doc}    if {s} < 0 or {s} > 100:\n        raise ValueError(\"{s} out of range\")\n    if {s} >= {}:\n        return \"A\"\n    if {s} >= {}:\n        return \"B\"\n    if {s} >= {}:\n        return \"C\"\n    if {s} >= {}:\n        return \"D\"\n    return \"F\"\n",
        cuts[0], cuts[1], cuts[2], cuts[3]
    );
    let model = |x: i64| {
        ["A", "B", "C", "D"]
            .iter()
            .zip(cuts)
            .find(|(_, c)| x >= *c)
            .map_or("F", |(l, _)| l)
    };
    let mut cases = Vec::new();
    for x in [
        100,
        cuts[0],
        cuts[1] - 1,
        cuts[2] + g.int(0, 5),
        cuts[3] - 1,
        0,
    ] {
        cases.push(case("letters", f, vec![Py::Int(x)], text(model(x))));
    }
    cases.push(raises(
        "out_of_range",
        f,
        vec![Py::Int(if g.chance(0.5) { 101 } else { -1 })],
        "ValueError",
    ));
    spec(f, &[s], code, cases)
}

fn title_case(g: &mut Gen) -> Spec {
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

fn find_index(g: &mut Gen) -> Spec {
    let f = g.pick(&["find_index", "index_of", "position"]);
    let (xs, t) = (
        g.pick(&["items", "values", "seq"]),
        g.pick(&["target", "wanted", "x"]),
    );
    let doc = g.docstring(&format!(
        "Index of the first {t} in {xs}, or -1 when absent."
    ));
    let body = if g.chance(0.5) {
        format!("    for i, item in enumerate({xs}):\n        if item == {t}:\n            return i\n    return -1\n")
    } else {
        format!("    return {xs}.index({t}) if {t} in {xs} else -1\n")
    };
    let code = format!("def {f}({xs}, {t}):\n{doc}{body}");
    let mut cases = Vec::new();
    for _ in 0..3 {
        let values = g.ints((1, 7), 0, 9);
        let target = values[g.0.below(values.len())];
        let at = values.iter().position(|&v| v == target).unwrap() as i64;
        cases.push(case(
            "present",
            f,
            vec![ints(&values), Py::Int(target)],
            Py::Int(at),
        ));
    }
    cases.push(case(
        "absent",
        f,
        vec![ints(&[1, 2, 3]), Py::Int(g.int(4, 9))],
        Py::Int(-1),
    ));
    cases.push(case("empty", f, vec![ints(&[]), Py::Int(1)], Py::Int(-1)));
    spec(f, &[xs, t], code, cases)
}

fn collatz(g: &mut Gen) -> Spec {
    let f = g.pick(&["collatz_steps", "steps_to_one", "hailstone_length"]);
    let n = g.pick(&["n", "start"]);
    let doc = g.docstring("Number of Collatz steps needed to reach 1.");
    let code = format!("def {f}({n}):\n{doc}    if {n} < 1:\n        raise ValueError(\"start must be positive\")\n    steps = 0\n    while {n} != 1:\n        {n} = {n} // 2 if {n} % 2 == 0 else 3 * {n} + 1\n        steps += 1\n    return steps\n");
    let model = |mut x: i64| {
        let mut steps = 0;
        while x != 1 {
            x = if x % 2 == 0 { x / 2 } else { 3 * x + 1 };
            steps += 1;
        }
        steps
    };
    let mut cases = vec![case("one", f, vec![Py::Int(1)], Py::Int(0))];
    for _ in 0..3 {
        let x = g.int(2, 100);
        cases.push(case("values", f, vec![Py::Int(x)], Py::Int(model(x))));
    }
    cases.push(raises(
        "not_positive",
        f,
        vec![Py::Int(-g.int(0, 5))],
        "ValueError",
    ));
    spec(f, &[n], code, cases)
}

fn merge_sorted(g: &mut Gen) -> Spec {
    let f = g.pick(&["merge_sorted", "merge", "combine_sorted"]);
    let (a, b) = if g.chance(0.5) {
        ("left", "right")
    } else {
        ("a", "b")
    };
    let doc = g.docstring("Merge two sorted lists into one sorted list.");
    let code = format!("def {f}({a}, {b}):\n{doc}    i = j = 0\n    merged = []\n    while i < len({a}) and j < len({b}):\n        if {a}[i] <= {b}[j]:\n            merged.append({a}[i])\n            i += 1\n        else:\n            merged.append({b}[j])\n            j += 1\n    merged.extend({a}[i:])\n    merged.extend({b}[j:])\n    return merged\n");
    let mut cases = Vec::new();
    for _ in 0..3 {
        let mut x = g.ints((0, 5), -9, 20);
        let mut y = g.ints((0, 5), -9, 20);
        x.sort();
        y.sort();
        let mut all = [x.clone(), y.clone()].concat();
        all.sort();
        cases.push(case("lists", f, vec![ints(&x), ints(&y)], ints(&all)));
    }
    cases.push(case("empty", f, vec![ints(&[]), ints(&[])], ints(&[])));
    spec(f, &[a, b], code, cases)
}

fn is_prime(g: &mut Gen) -> Spec {
    let f = g.pick(&["is_prime", "prime", "check_prime"]);
    let n = g.pick(&["n", "number", "candidate"]);
    let doc = g.docstring("Whether the integer is a prime number.");
    let body = if g.chance(0.5) {
        format!("    if {n} < 2:\n        return False\n    i = 2\n    while i * i <= {n}:\n        if {n} % i == 0:\n            return False\n        i += 1\n    return True\n")
    } else {
        format!("    return {n} > 1 and all({n} % d for d in range(2, int({n} ** 0.5) + 1))\n")
    };
    let code = format!("def {f}({n}):\n{doc}{body}");
    let model = |x: i64| x > 1 && (2..x).take_while(|d| d * d <= x).all(|d| x % d != 0);
    let mut cases = Vec::new();
    for x in [
        2,
        g.pick(&["1", "0"]).parse().unwrap(),
        g.int(3, 200),
        g.int(3, 200),
        g.int(3, 200),
        97,
    ] {
        cases.push(case(
            if model(x) { "primes" } else { "composites" },
            f,
            vec![Py::Int(x)],
            Py::Bool(model(x)),
        ));
    }
    spec(f, &[n], code, cases)
}

fn leap_year(g: &mut Gen) -> Spec {
    let f = g.pick(&["is_leap_year", "leap_year", "is_leap"]);
    let y = g.pick(&["year", "y"]);
    let doc = g.docstring("Whether the Gregorian year has 366 days.");
    let body = if g.chance(0.5) {
        format!("    return {y} % 4 == 0 and ({y} % 100 != 0 or {y} % 400 == 0)\n")
    } else {
        format!("    if {y} % 400 == 0:\n        return True\n    if {y} % 100 == 0:\n        return False\n    return {y} % 4 == 0\n")
    };
    let code = format!("def {f}({y}):\n{doc}{body}");
    let model = |x: i64| x % 4 == 0 && (x % 100 != 0 || x % 400 == 0);
    let mut cases = Vec::new();
    for x in [2000, 1900, 4 * g.int(480, 510), g.int(1800, 2100), 2023] {
        cases.push(case(
            if model(x) { "leap" } else { "common" },
            f,
            vec![Py::Int(x)],
            Py::Bool(model(x)),
        ));
    }
    spec(f, &[y], code, cases)
}

fn second_largest(g: &mut Gen) -> Spec {
    let f = g.pick(&["second_largest", "runner_up", "second_max"]);
    let xs = g.pick(&["numbers", "scores", "values"]);
    let doc = g.docstring("The second largest distinct value.");
    let code = format!("def {f}({xs}):\n{doc}    distinct = sorted(set({xs}), reverse=True)\n    if len(distinct) < 2:\n        raise ValueError(\"need two distinct values\")\n    return distinct[1]\n");
    let mut cases = Vec::new();
    for _ in 0..3 {
        let mut values = g.ints((2, 6), -20, 20);
        values.push(values[0] + 1);
        let mut d = values.clone();
        d.sort_unstable_by(|a, b| b.cmp(a));
        d.dedup();
        cases.push(case("values", f, vec![ints(&values)], Py::Int(d[1])));
    }
    let v = g.int(0, 9);
    cases.push(raises("all_equal", f, vec![ints(&[v, v, v])], "ValueError"));
    cases.push(raises("empty", f, vec![ints(&[])], "ValueError"));
    spec(f, &[xs], code, cases)
}

fn stack(g: &mut Gen) -> Spec {
    let class = g.pick(&["Stack", "LifoStack", "History"]);
    let (push, pop) = if g.chance(0.5) {
        ("push", "pop")
    } else {
        ("add", "take")
    };
    let doc = g.docstring("A last-in, first-out stack.");
    let code = format!(
        "class {class}:\n{doc}    def __init__(self):\n        self._items = []\n\n    def {push}(self, item):\n        self._items.append(item)\n\n    def {pop}(self):\n        if not self._items:\n            raise IndexError(\"{pop} from an empty stack\")\n        return self._items.pop()\n\n    def peek(self):\n        return self._items[-1] if self._items else None\n\n    def __len__(self):\n        return len(self._items)\n"
    ).replace("\n    def __init__", if doc.is_empty() { "\n    def __init__" } else { "\n\n    def __init__" });
    let values = g.ints((2, 4), 0, 99);
    let mut order = vec![format!("s = {class}()")];
    order.extend(values.iter().map(|v| format!("s.{push}({v})")));
    for v in values.iter().rev() {
        order.push(format!("assert s.{pop}() == {v}"));
    }
    order.push("assert len(s) == 0".into());
    let mut peek = vec![format!("s = {class}()"), "assert s.peek() is None".into()];
    peek.push(format!("s.{push}({})", values[0]));
    peek.push(format!("assert s.peek() == {}", values[0]));
    peek.push("assert len(s) == 1".into());
    let lower = class.to_lowercase();
    Spec {
        names: vec![class.to_string()],
        code,
        scripts: vec![
            Script {
                name: format!("test_{lower}_is_last_in_first_out"),
                lines: order,
                raises: false,
            },
            Script {
                name: format!("test_{lower}_peek_does_not_remove"),
                lines: peek,
                raises: false,
            },
            Script {
                name: format!("test_{lower}_{pop}_empty_raises"),
                lines: vec![
                    format!("s = {class}()"),
                    "with pytest.raises(IndexError):".into(),
                    format!("    s.{pop}()"),
                ],
                raises: true,
            },
        ],
        ..Spec::default()
    }
}

fn account(g: &mut Gen) -> Spec {
    let class = g.pick(&["Account", "Wallet", "PiggyBank"]);
    let doc = g.docstring("A balance in whole cents that never goes negative.");
    let code = format!(
        "class {class}:\n{doc}    def __init__(self, balance=0):\n        if balance < 0:\n            raise ValueError(\"negative opening balance\")\n        self.balance = balance\n\n    def deposit(self, amount):\n        if amount <= 0:\n            raise ValueError(\"deposit must be positive\")\n        self.balance += amount\n        return self.balance\n\n    def withdraw(self, amount):\n        if amount <= 0:\n            raise ValueError(\"withdrawal must be positive\")\n        if amount > self.balance:\n            raise ValueError(\"insufficient funds\")\n        self.balance -= amount\n        return self.balance\n"
    ).replace("\n    def __init__", if doc.is_empty() { "\n    def __init__" } else { "\n\n    def __init__" });
    let (open, dep) = (g.int(0, 500), g.int(1, 300));
    let wd = g.int(1, open + dep);
    let lower = class.to_lowercase();
    let script = |name: &str, lines: Vec<String>, raises: bool| Script {
        name: format!("test_{lower}_{name}"),
        lines,
        raises,
    };
    Spec {
        names: vec![class.to_string()],
        code,
        scripts: vec![
            script(
                "deposit_and_withdraw",
                vec![
                    format!("acct = {class}({open})"),
                    format!("assert acct.deposit({dep}) == {}", open + dep),
                    format!("assert acct.withdraw({wd}) == {}", open + dep - wd),
                    format!("assert acct.balance == {}", open + dep - wd),
                ],
                false,
            ),
            script(
                "overdraft_raises",
                vec![
                    format!("acct = {class}({open})"),
                    "with pytest.raises(ValueError):".into(),
                    format!("    acct.withdraw({})", open + g.int(1, 50)),
                    format!("assert acct.balance == {open}"),
                ],
                true,
            ),
            script(
                "rejects_non_positive_amounts",
                vec![
                    format!("acct = {class}()"),
                    "with pytest.raises(ValueError):".into(),
                    format!("    acct.deposit({})", -g.int(0, 10)),
                ],
                true,
            ),
        ],
        ..Spec::default()
    }
}

type Family = fn(&mut Gen) -> Spec;

/// Every family, by name.
const FAMILIES: &[(&str, Family)] = &[
    ("clamp", clamp),
    ("sum_multiples", sum_multiples),
    ("count_vowels", count_vowels),
    ("reverse_words", reverse_words),
    ("palindrome", palindrome),
    ("fizzbuzz", fizzbuzz),
    ("running_total", running_total),
    ("spread", spread),
    ("gcd", gcd),
    ("factorial", factorial),
    ("dedupe", dedupe),
    ("run_length", run_length),
    ("caesar", caesar),
    ("floor_divide", floor_divide),
    ("chunk", chunk),
    ("word_lengths", word_lengths),
    ("discount", discount),
    ("digit_sum", digit_sum),
    ("fibonacci", fibonacci),
    ("grade", grade),
    ("title_case", title_case),
    ("find_index", find_index),
    ("collatz", collatz),
    ("merge_sorted", merge_sorted),
    ("is_prime", is_prime),
    ("leap_year", leap_year),
    ("second_largest", second_largest),
    ("stack", stack),
    ("account", account),
];

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

fn render_tests(g: &mut Gen, module: &str, spec: &Spec) -> String {
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
