//! ARCHITECTURE.md's import rules, checked on the source: no import circle between the modules of
//! any crate of the workspace, the trainer's folders importing only the layers below them, and
//! every trainer source file named in the code map.
//!
//! A module's imports are its `crate::…`, `super::…` and child-module paths outside comments and
//! outside its `#[cfg(test)]` module (a kernel's test may compare with the model's composed
//! reference). A path counts toward the longest module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The source files of a crate rooted at `src`, by module path (`""` is the crate root).
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(src).unwrap().with_extension("");
                let mut parts: Vec<String> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(
                    parts.last().map(String::as_str),
                    Some("mod" | "lib" | "main")
                ) {
                    parts.pop();
                }
                found.insert(parts.join("::"), path);
            }
        }
    }
    found
}

/// The code of a file without comments and without its `#[cfg(test)]` module (which rustfmt
/// closes with a `}` alone at the start of a line).
fn code_outside_tests(text: &str) -> String {
    let mut code = String::new();
    let mut in_tests = false;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if in_tests {
            in_tests = line != "}";
            continue;
        }
        if line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod ") || next.contains(" mod "))
        {
            in_tests = true;
            lines.next();
            continue;
        }
        let line = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// Identifier paths `a::b::c` starting at each occurrence of `prefix` in `code`, with grouped
/// imports (`prefix{a, b::{c, d}}`) expanded.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        expand(rest, Vec::new(), &mut out);
    }
    out
}

fn expand(text: &str, head: Vec<String>, out: &mut Vec<Vec<String>>) {
    let text = text.trim_start();
    if let Some(inner) = text.strip_prefix('{') {
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    expand(&inner[start..i], head.clone(), out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], head.clone(), out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let ident: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() {
        if !head.is_empty() {
            out.push(head);
        }
        return;
    }
    let mut path = head;
    path.push(ident.clone());
    match text[ident.len()..].strip_prefix("::") {
        Some(more) => expand(more, path, out),
        None => out.push(path),
    }
}

/// The longest module of `known` that `path` names, if any.
fn resolve(path: &[String], known: &BTreeMap<String, PathBuf>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|candidate| known.contains_key(candidate))
}

/// Module → the modules it imports, for the crate rooted at `src`.
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let known = modules(src);
    let mut graph = BTreeMap::new();
    for (module, file) in &known {
        let code = code_outside_tests(&std::fs::read_to_string(file).unwrap());
        let own: Vec<String> = if module.is_empty() {
            Vec::new()
        } else {
            module.split("::").map(str::to_string).collect()
        };
        let parent = &own[..own.len().saturating_sub(1)];
        let mut targets = BTreeSet::new();
        let mut add = |path: Vec<String>| {
            if let Some(target) = resolve(&path, &known) {
                if &target != module && !target.is_empty() {
                    targets.insert(target);
                }
            }
        };
        for path in paths_after(&code, "crate::") {
            add(path);
        }
        for path in paths_after(&code, "super::") {
            add(parent.iter().cloned().chain(path).collect());
        }
        for path in paths_after(&code, "self::") {
            add(own.iter().cloned().chain(path).collect());
        }
        // A child module named without a prefix (`sft::train(…)` in `stages/mod.rs`).
        let prefix = if module.is_empty() {
            String::new()
        } else {
            format!("{module}::")
        };
        for child in known.keys() {
            let Some(name) = child.strip_prefix(&prefix) else {
                continue;
            };
            if !name.is_empty()
                && !name.contains("::")
                && !paths_after(&code, &format!("{name}::")).is_empty()
            {
                targets.insert(child.clone());
            }
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

/// Every circle of imports in `graph` (strongly connected components of more than one module).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !tarjan.index.contains_key(v.as_str()) {
            tarjan.visit(v);
        }
    }
    tarjan.found
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_crate_of_the_workspace_has_an_import_circle() {
    for src in ["src", "sandbox/src", "trainer/src"] {
        let graph = import_graph(&root().join(src));
        assert!(graph.len() > 5, "{src}: too few modules found");
        let found = circles(&graph);
        assert!(found.is_empty(), "{src} has import circles: {found:?}");
    }
}

/// The trainer's layers: what each folder may import besides itself and the crate-wide
/// modules at the root (`lib.rs`, `device.rs`, `plot.rs`).
const TRAINER_LAYERS: &[(&str, &[&str])] = &[
    ("kernels", &[]),
    ("model", &["kernels"]),
    ("data", &[]),
    ("new_model", &["kernels", "model", "data"]),
    ("train", &["kernels", "model", "data"]),
    ("stages", &["kernels", "model", "data", "train"]),
    ("deliver", &["kernels", "model", "data"]),
    ("eval", &["kernels", "model", "data", "deliver"]),
];

/// The crate-wide modules every layer may use; they import none of the layers.
const TRAINER_ROOT_MODULES: &[&str] = &["device", "plot"];

#[test]
fn each_trainer_folder_imports_only_the_layers_below_it() {
    let graph = import_graph(&root().join("trainer/src"));
    let folder = |module: &str| module.split("::").next().unwrap_or("").to_string();
    let mut broken = Vec::new();
    for (module, targets) in &graph {
        let own = folder(module);
        if module.is_empty() {
            continue;
        }
        let allowed: Vec<&str> = if TRAINER_ROOT_MODULES.contains(&module.as_str()) {
            Vec::new()
        } else {
            let (_, below) = TRAINER_LAYERS
                .iter()
                .find(|(name, _)| *name == own)
                .unwrap_or_else(|| {
                    panic!(
                        "trainer/src/{own} is neither a layer of TRAINER_LAYERS nor a root module"
                    )
                });
            below
                .iter()
                .copied()
                .chain(TRAINER_ROOT_MODULES.iter().copied())
                .collect()
        };
        for target in targets {
            let theirs = folder(target);
            if theirs != own && !allowed.contains(&theirs.as_str()) {
                broken.push(format!("{module} imports {target}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layer rules broken:\n{}",
        broken.join("\n")
    );
}

/// A `mod.rs` that only documents and declares its folder's modules (the map names the folder).
fn only_declares_modules(file: &Path) -> bool {
    code_outside_tests(&std::fs::read_to_string(file).unwrap())
        .lines()
        .map(str::trim)
        .all(|line| line.is_empty() || line.starts_with("pub mod ") || line.starts_with("mod "))
}

#[test]
fn the_code_map_names_every_trainer_file() {
    let map = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let src = root().join("trainer/src");
    let missing: Vec<String> = modules(&src)
        .values()
        .map(|file| {
            file.strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|file| !file.starts_with("data/corpus/families/") && file != "lib.rs")
        .filter(|file| !(file.ends_with("mod.rs") && only_declares_modules(&src.join(file))))
        .filter(|file| !map.contains(file.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map lacks {missing:?}"
    );
}

#[test]
fn the_checker_finds_a_circle_and_a_grouped_import() {
    // The checker's own parts, on a made-up crate: a grouped import resolves to its modules,
    // and a two-module circle is found.
    let paths = paths_after("use crate::{a::B, b::{c, D}};", "crate::");
    assert_eq!(
        paths,
        vec![
            vec!["a".to_string(), "B".into()],
            vec!["b".into(), "c".into()],
            vec!["b".into(), "D".into()]
        ]
    );
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    graph.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(circles(&graph), vec![vec!["a".to_string(), "b".into()]]);
    let code = code_outside_tests(
        "use crate::x;\n// crate::y\n#[cfg(test)]\nmod tests {\n    use crate::z;\n}\n",
    );
    assert_eq!(paths_after(&code, "crate::"), vec![vec!["x".to_string()]]);
}
