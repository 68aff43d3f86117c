"""Throughput benchmarks: ``send_batch``, the client layer and peer libraries.

Run ``python -m bench`` (``--help`` for options). Every measured client runs in
its own subprocess pinned to one core, against a fast local fake APNs + FCM
server (nginx, pinned to the other core) so the numbers are the client's own.
Results go to ``bench/results/latest.json`` and ``bench/results/latest.md``.
"""
