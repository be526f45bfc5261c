"""Plain logic with no Dagster import: parsing, redaction, clustering, sampling, scoring, statistics."""
