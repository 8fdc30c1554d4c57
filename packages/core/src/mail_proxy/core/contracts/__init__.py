"""Contracts: the data model, settings, errors and the interfaces plugins implement (no engine code)."""
