"""Built-in method plugins. Each module registers through the same hooks a third party uses;
the host finds them by walking this package, never by name."""
