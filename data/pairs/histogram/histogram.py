def histogram(values, bins, low, high):
    if bins < 1 or high <= low:
        raise ValueError("need bins >= 1 and high > low")
    counts = [0] * bins
    width = (high - low) / bins
    for value in values:
        if value < low or value > high:
            continue
        index = int((value - low) / width)
        if index == bins:
            index -= 1
        counts[index] += 1
    return counts
