"""Thin command-line entry points; each calls a plain function."""
