"""arbstr: a cost-aware, OpenAI-compatible proxy for the Routstr marketplace."""

__version__ = "0.1.0"
