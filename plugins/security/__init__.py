"""Built-in security plugins."""
