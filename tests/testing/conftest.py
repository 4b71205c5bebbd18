"""The Hub fixtures (`hub`, `run_client`) live in tests/conftest.py, shared with tests/store."""
