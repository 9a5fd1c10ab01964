"""The request log on PostgreSQL: migrations under an advisory lock, the batch writer, and a
connection pool for the reads (the queries themselves are shared with SQLite)."""
