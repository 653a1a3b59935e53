"""Rate limits and money: the limiter, the ledger, the permit desk and its thread, the
worker-side client.
"""
