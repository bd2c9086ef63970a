UNITS = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text):
    """Parse '1h30m15s' style durations into seconds."""
    if not text:
        raise ValueError("empty duration")
    total = 0
    number = ""
    for ch in text.strip():
        if ch.isdigit():
            number += ch
        elif ch in UNITS:
            if not number:
                raise ValueError(f"unit {ch!r} without a number")
            total += int(number) * UNITS[ch]
            number = ""
        else:
            raise ValueError(f"unexpected character {ch!r}")
    if number:
        raise ValueError("trailing number without a unit")
    return total
