from collections import Counter


def is_anagram(a, b):
    clean_a = a.replace(" ", "").lower()
    clean_b = b.replace(" ", "").lower()
    return Counter(clean_a) == Counter(clean_b)


def group_anagrams(words):
    groups = {}
    for word in words:
        key = "".join(sorted(word.lower()))
        groups.setdefault(key, []).append(word)
    return sorted(sorted(group) for group in groups.values())
