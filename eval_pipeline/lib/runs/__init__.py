"""Runs: which days a refresh runs, and its progress."""
