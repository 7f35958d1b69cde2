"""Tests of gateway/ledger/: books, accounting, pricing, credits, reports."""
