"""Built-in log (being built)."""
