"""The ``cloudless`` command line."""
