SPECIAL = set("!@#$%^&*()-_=+")


def password_problems(password, min_length=8):
    problems = []
    if len(password) < min_length:
        problems.append("too short")
    if not any(ch.isdigit() for ch in password):
        problems.append("no digit")
    if not any(ch.isupper() for ch in password):
        problems.append("no uppercase letter")
    if not any(ch in SPECIAL for ch in password):
        problems.append("no special character")
    return problems


def is_strong(password):
    return not password_problems(password)
