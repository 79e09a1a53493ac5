"""Circuit breakers per (provider, model)."""
