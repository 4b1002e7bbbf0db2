"""marketbus benchmarks: ``python -m bench`` from the repository root.

Publish and subscribe throughput, end-to-end latency, the bus's CPU next to ccxt.pro's
per exchange frame, and a consumer's memory, each next to a plain redis-py baseline.

Each benchmark runs marketbus and its baseline in the same process run, against a private
loopback redis-server it starts and stops, bounded in count and time. See
docs/benchmarks.md for the figures and how to read them.
"""
