"""What the tests and the benchmarks share to start, watch and stop the real parts they run
against: child processes, free ports and polling for a condition.

It lives outside ``tests/`` so that ``benchmarks/`` uses the same code as the tests without
importing test modules.
"""
