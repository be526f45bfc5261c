"""The demo: a generator of realistic support-assistant logs, its recorded model versions, simulated annotators and public data sets (not used by the pipeline itself)."""
