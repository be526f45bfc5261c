"""Privacy: PII redaction, its content-addressed cache, raw-data retention."""
