//! What a generated pair is made of: Python literals (`Py`, rendered exactly as Python writes
//! them), the checked calls and scripts a suite holds (`Case`, `Script`), one family instance
//! (`Spec`), and the seeded draws the families make (`Gen`).

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

pub(crate) fn ints(values: &[i64]) -> Py {
    Py::List(values.iter().map(|&n| Py::Int(n)).collect())
}

pub(crate) fn text(s: &str) -> Py {
    Py::Str(s.to_string())
}

/// What a call must do.
#[derive(Debug, Clone)]
pub(crate) enum Expect {
    Value(Py),
    Raises(&'static str),
}

/// One checked call of a module function, grouped into tests by `label`.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub(crate) label: &'static str,
    pub(crate) function: String,
    pub(crate) args: Vec<Py>,
    pub(crate) expect: Expect,
}

/// A test written out as statements (for classes, whose behaviour is a sequence of calls).
#[derive(Debug, Clone)]
pub(crate) struct Script {
    pub(crate) name: String,
    pub(crate) lines: Vec<String>,
    pub(crate) raises: bool,
}

/// One family's instance: the module's code and what its tests check.
#[derive(Debug, Clone, Default)]
pub(crate) struct Spec {
    pub(crate) imports: Vec<String>,
    pub(crate) names: Vec<String>,
    pub(crate) code: String,
    pub(crate) params: Vec<String>,
    pub(crate) cases: Vec<Case>,
    pub(crate) scripts: Vec<Script>,
}

pub(crate) struct Gen<'a>(pub(crate) &'a mut SplitMix64);

impl Gen<'_> {
    pub(crate) fn pick<'s>(&mut self, items: &[&'s str]) -> &'s str {
        items[self.0.below(items.len())]
    }
    pub(crate) fn int(&mut self, low: i64, high: i64) -> i64 {
        low + self.0.below((high - low + 1) as usize) as i64
    }
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.0.uniform() < p
    }
    pub(crate) fn ints(&mut self, len: (usize, usize), low: i64, high: i64) -> Vec<i64> {
        let n = len.0 + self.0.below(len.1 - len.0 + 1);
        (0..n).map(|_| self.int(low, high)).collect()
    }
    pub(crate) fn words(&mut self, len: (usize, usize)) -> Vec<&'static str> {
        let n = len.0 + self.0.below(len.1 - len.0 + 1);
        (0..n).map(|_| self.pick(WORDS)).collect()
    }
    pub(crate) fn sentence(&mut self, len: (usize, usize)) -> String {
        self.words(len).join(" ")
    }
    pub(crate) fn docstring(&mut self, text: &str) -> String {
        if self.chance(0.5) {
            format!("    \"\"\"{text}\"\"\"\n")
        } else {
            String::new()
        }
    }
}

pub(crate) const WORDS: &[&str] = &[
    "apple", "banana", "cherry", "delta", "echo", "river", "stone", "cloud", "tiger", "lemon",
    "paper", "green", "orbit", "pixel", "maple", "quartz", "north", "salt", "vivid", "zebra",
    "table", "music", "ocean", "light", "queue", "union", "yacht", "igloo", "amber", "frost",
];

pub(crate) const PALINDROMES: &[&str] = &[
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

pub(crate) fn case(label: &'static str, function: &str, args: Vec<Py>, expect: Py) -> Case {
    Case {
        label,
        function: function.to_string(),
        args,
        expect: Expect::Value(expect),
    }
}

pub(crate) fn raises(
    label: &'static str,
    function: &str,
    args: Vec<Py>,
    error: &'static str,
) -> Case {
    Case {
        label,
        function: function.to_string(),
        args,
        expect: Expect::Raises(error),
    }
}

pub(crate) fn spec(name: &str, params: &[&str], code: String, cases: Vec<Case>) -> Spec {
    Spec {
        names: vec![name.to_string()],
        params: params.iter().map(|p| p.to_string()).collect(),
        code,
        cases,
        ..Spec::default()
    }
}
