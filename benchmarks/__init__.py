"""Benchmarks: measurements that are not tests (``make bench``, ``python -m benchmarks``).

Each module with a ``main()`` is one benchmark; it writes its numbers under
``benchmarks/results/``.
"""
