"""Built-in schedule (being built)."""
