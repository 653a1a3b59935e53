"""pd: run a team of AI coding agents in parallel on one git repository, safely."""

__version__ = "0.1.0"
