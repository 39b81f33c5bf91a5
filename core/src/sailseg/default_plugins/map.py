"""Built-in map (being built)."""
