"""Tests of gateway/jobs/: the scheduler and backups."""
