"""Tests of gateway/limits/: the rate limiters, budgets and reservations."""
