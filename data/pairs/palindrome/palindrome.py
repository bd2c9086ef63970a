def normalise(text):
    return "".join(ch.lower() for ch in text if ch.isalnum())


def is_palindrome(text):
    cleaned = normalise(text)
    left, right = 0, len(cleaned) - 1
    while left < right:
        if cleaned[left] != cleaned[right]:
            return False
        left += 1
        right -= 1
    return True
