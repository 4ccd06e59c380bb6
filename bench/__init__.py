"""Benchmark of the whole pipeline against the plain transformers loop a user would write.

Run from the repository root: ``python -m bench --corpus DIR --articles N [--baseline/--no-baseline]``.
See bench/README.md for what it measures and the results on the project's machine.
"""
