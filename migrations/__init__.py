"""Alembic migrations of KeyRelay's schema (gateway/schema.py runs them)."""
