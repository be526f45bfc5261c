"""Evaluation: scorers, statistics, gates, the scorecard's report, review of failures."""
