"""Privacy domain: PII redaction, the restricted raw zone and its retention."""
