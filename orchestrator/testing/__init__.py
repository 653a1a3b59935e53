"""For tests and ``pd demo``: the local API server and the sample repository. Never
imported by a real run.
"""
