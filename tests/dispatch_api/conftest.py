"""dispatch-api tests use the harness in tests/support/api.py (registered in tests/conftest.py)."""
