"""Registry: model versions and their providers."""
