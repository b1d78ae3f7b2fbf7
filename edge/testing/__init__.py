"""Test doubles and helpers shared by the tests and the benchmarks: real servers, not mocks.

`origin` is a scriptable origin HTTP server on loopback that can misbehave on purpose;
`resolver` answers DNS questions from a table; `process` starts `twistd cosedge` as a real
process and reads it; `deferreds` reads an already-fired Deferred in synchronous tests.
They ship with the package, so `bench/` and `tests/` use one copy of each.
"""
