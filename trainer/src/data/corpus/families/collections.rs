//! Collection families: lists in, lists or numbers out, and two small classes (a stack, an
//! account) whose tests are scripts of method calls.

use crate::data::corpus::spec::{case, ints, raises, spec, text, Gen, Py, Script, Spec, WORDS};

pub(crate) fn running_total(g: &mut Gen) -> Spec {
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

pub(crate) fn spread(g: &mut Gen) -> Spec {
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

pub(crate) fn dedupe(g: &mut Gen) -> Spec {
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

pub(crate) fn chunk(g: &mut Gen) -> Spec {
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

pub(crate) fn find_index(g: &mut Gen) -> Spec {
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

pub(crate) fn merge_sorted(g: &mut Gen) -> Spec {
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

pub(crate) fn second_largest(g: &mut Gen) -> Spec {
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

pub(crate) fn stack(g: &mut Gen) -> Spec {
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

pub(crate) fn account(g: &mut Gen) -> Spec {
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
