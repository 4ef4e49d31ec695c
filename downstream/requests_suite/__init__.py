"""requests' own test suite run against pool-made sessions (see run.py)."""
