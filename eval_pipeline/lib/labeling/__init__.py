"""Labeling: rubrics, annotation tasks and labels, agreement, the LLM judge and its probes."""
