import string

ALPHABET = string.ascii_lowercase


def shift_char(ch, key):
    if ch.lower() not in ALPHABET:
        return ch
    index = (ALPHABET.index(ch.lower()) + key) % 26
    shifted = ALPHABET[index]
    return shifted.upper() if ch.isupper() else shifted


def encrypt(text, key):
    return "".join(shift_char(ch, key) for ch in text)


def decrypt(text, key):
    return encrypt(text, -key)
