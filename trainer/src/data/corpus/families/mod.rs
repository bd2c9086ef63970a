//! The 29 function families, grouped by what they work on, and the table that names them.

mod collections;
pub(crate) mod numeric;
mod text;

use collections::*;
use numeric::*;
use text::*;

use crate::data::corpus::spec::{Gen, Spec};

pub(crate) type Family = fn(&mut Gen) -> Spec;

/// Every family, by name.
pub(crate) const FAMILIES: &[(&str, Family)] = &[
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
