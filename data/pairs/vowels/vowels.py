VOWELS = "aeiou"


def count_vowels(text):
    return sum(1 for ch in text.lower() if ch in VOWELS)


def remove_vowels(text):
    return "".join(ch for ch in text if ch.lower() not in VOWELS)


def first_vowel_index(text):
    for index, ch in enumerate(text):
        if ch.lower() in VOWELS:
            return index
    return None
