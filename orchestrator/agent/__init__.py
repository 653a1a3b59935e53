"""The agent: the loop that asks a model and runs tools, its attempts, its tools, the
reviewer, the recorder and external CLI agents.
"""
