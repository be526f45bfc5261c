"""Shared plumbing: the data home's paths, file locks, YAML and JSONL readers, how a setting is declared."""
