"""The demo: the settings that fit its generated logs (e.g. its gates, ``thresholds.yaml``)."""
