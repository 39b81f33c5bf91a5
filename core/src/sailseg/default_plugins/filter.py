"""Built-in filter (being built)."""
