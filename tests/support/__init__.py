"""Helpers for tests that run the fleet's real processes."""
