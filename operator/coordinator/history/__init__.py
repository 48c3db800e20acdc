"""The run history: a durable mirror of finished TestRuns for reports (SQLite or PostgreSQL), plus Redis helpers."""
