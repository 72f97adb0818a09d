

ab