OPERATORS = "+-*/()"


def tokenize(expression):
    tokens = []
    number = ""
    for ch in expression:
        if ch.isdigit() or ch == ".":
            number += ch
            continue
        if number:
            tokens.append(float(number) if "." in number else int(number))
            number = ""
        if ch in OPERATORS:
            tokens.append(ch)
        elif not ch.isspace():
            raise SyntaxError(f"unexpected {ch!r}")
    if number:
        tokens.append(float(number) if "." in number else int(number))
    return tokens
