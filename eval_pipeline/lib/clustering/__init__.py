"""Clustering: a month's topics and their identity from month to month."""
