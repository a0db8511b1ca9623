"""dispatch-api tests use the harness in testkit/api.py (registered in tests/conftest.py)."""
