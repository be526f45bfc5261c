"""Evaluation: a model version's outputs on the eval set, their scores, the scorecard and its verdict."""
