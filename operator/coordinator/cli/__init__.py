"""The ``coordinator`` command line."""
