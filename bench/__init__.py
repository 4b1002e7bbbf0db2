"""marketbus benchmarks (issue #6): ``python -m bench`` from the repository root.

Each benchmark runs marketbus and its baseline in the same process run, against a private
loopback redis-server it starts and stops, bounded in count and time. See
docs/benchmarks.md for the figures and how to read them.
"""
