from word_count import top_words, word_counts


def test_counts_are_case_insensitive():
    assert word_counts("The cat and the hat") == {"the": 2, "cat": 1, "and": 1, "hat": 1}


def test_empty_text():
    assert word_counts("") == {}
    assert top_words("") == []


def test_top_words_ties_break_alphabetically():
    assert top_words("b a c a b a", n=2) == ["a", "b"]
    assert top_words("z y x", n=5) == ["x", "y", "z"]
