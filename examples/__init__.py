"""Example applications built on relay (see examples/README.md)."""
