//! Number families: bounds, divisibility, sequences, grading — each written several ways, with
//! expected values from a Rust model of the function.

use crate::data::corpus::spec::{case, ints, raises, spec, text, Gen, Py, Spec};

pub(crate) fn clamp(g: &mut Gen) -> Spec {
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

pub(crate) fn sum_multiples(g: &mut Gen) -> Spec {
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

pub(crate) fn fizzbuzz(g: &mut Gen) -> Spec {
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

pub(crate) fn gcd(g: &mut Gen) -> Spec {
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

pub(crate) fn factorial(g: &mut Gen) -> Spec {
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

/// Python's `//`: the floor of the quotient (Rust's `/` truncates, `div_euclid` keeps r ≥ 0).
pub(crate) fn floor_div(x: i64, y: i64) -> i64 {
    let q = x.div_euclid(y);
    if y < 0 && x.rem_euclid(y) != 0 {
        q - 1
    } else {
        q
    }
}

pub(crate) fn floor_divide(g: &mut Gen) -> Spec {
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

pub(crate) fn discount(g: &mut Gen) -> Spec {
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

pub(crate) fn digit_sum(g: &mut Gen) -> Spec {
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

pub(crate) fn fibonacci(g: &mut Gen) -> Spec {
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

pub(crate) fn grade(g: &mut Gen) -> Spec {
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

pub(crate) fn collatz(g: &mut Gen) -> Spec {
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

pub(crate) fn is_prime(g: &mut Gen) -> Spec {
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

pub(crate) fn leap_year(g: &mut Gen) -> Spec {
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
