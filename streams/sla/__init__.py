"""SLA windows per (provider, model, tenant): availability, latency and cost per minute."""
