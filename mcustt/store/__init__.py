"""Persistence: SQLModel models, the async database handle, and queries."""
