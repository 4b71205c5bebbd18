"""Test support code (not shipped): run helpers and the local Hub-API server."""
