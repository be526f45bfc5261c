"""Ingest domain: landing files to canonical records, with quarantine."""
