"""Dagster definitions, one folder per domain (= asset group)."""
