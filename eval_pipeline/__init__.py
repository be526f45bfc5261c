"""eval-pipeline: production LLM logs in, a versioned eval set and model verdicts out."""

__version__ = "0.1.0"
