"""Built-in compressors plugins."""
