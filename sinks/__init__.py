"""The audit store: migrations, the batch writer, the query API."""
