"""Built-in stores (being built)."""
