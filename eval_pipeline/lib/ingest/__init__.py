"""Ingestion: format adapters, the canonical record, parsing and the data-quality suite."""
