"""The ``pd`` command line: one module per command group, each command thin."""
