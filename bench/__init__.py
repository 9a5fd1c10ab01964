"""Benchmark of arbstr's added cost: a fast mock upstream, load generators, one report.

Run it with ``make bench`` (or ``python -m bench``); see ``bench/run.py``.
"""
