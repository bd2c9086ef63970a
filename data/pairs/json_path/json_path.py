def get_path(document, path, default=None):
    """Follow a dotted path like 'a.b.0.c' through dicts and lists."""
    current = document
    for part in path.split("."):
        if isinstance(current, dict):
            if part not in current:
                return default
            current = current[part]
        elif isinstance(current, list):
            if not part.isdigit() or int(part) >= len(current):
                return default
            current = current[int(part)]
        else:
            return default
    return current
