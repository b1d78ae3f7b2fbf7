"""Test doubles and helpers shared by the tests and the benchmarks: real servers, not mocks.

`origin` is a scriptable origin HTTP server on loopback; the resolver stand-in answers DNS
questions from a table. They ship with the package so `bench/` and `tests/` use one copy.
"""
