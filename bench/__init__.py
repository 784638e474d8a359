"""Benchmarks of flask-notify-emergency, run by ``bench/run.py`` (``make bench``).

Each benchmark module lists its benchmarks in ``BENCHMARKS``, a list of
``(key, function)`` pairs; ``function(options)`` returns a dict of numbers (plus a
``"targets"`` dict) that the runner merges into one JSON object.
"""
