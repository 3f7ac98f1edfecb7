"""syncd's performance benchmark (issue 6): ``python -m bench --size small|full``.

The simulator runs in its own process (:mod:`bench.simproc`); syncd runs in
worker processes (:mod:`bench.worker`) so that its CPU time and memory are
measured alone; :mod:`bench.__main__` orchestrates and reports.
"""
