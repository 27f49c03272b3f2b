"""Readers for the inputs edgesentry takes from disk."""
