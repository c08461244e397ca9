"""Ingest adapters: one per transport, each feeding the same session pipeline."""
