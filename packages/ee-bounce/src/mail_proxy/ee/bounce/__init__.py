"""Bounce handling for genro-mail-proxy (Enterprise Edition, BSL-1.1)."""
