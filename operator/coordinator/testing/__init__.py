"""The operator and its stores as real processes, for the test tiers, ``make demo`` and the benchmarks.

One way to start ``coordinator run`` (:class:`~coordinator.testing.process.OperatorProcess`), PostgreSQL and
Redis (:mod:`coordinator.testing.servers`), and to wait for a condition with a deadline
(:func:`~coordinator.testing.waiting.wait_for`), importable wherever the package is installed: tests/, hack/demo.py
and benchmarks/ all use these instead of each starting the operator its own way (and instead of ``sys.path``
inserts to reach each other's helpers). Like ``kopf.testing``: shipped with the package, never imported by the
operator itself.
"""
