"""Benchmarks of Visual Tourism: ``python -m benchmarks`` (or ``make benchmark``)."""
