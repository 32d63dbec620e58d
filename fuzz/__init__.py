"""Fuzzing of every parser of stirshaken: one target per parser, one small shared harness.

Each target (``fuzz/targets/<name>.py``) is a function of one ``bytes`` input that feeds it to
a parser and checks the property every parser must keep: it returns a value or raises the
project's typed error for that input, with one line of text, never any other exception; and
where the parser has a serializer, the value survives the round trip.  A broken property raises
(:class:`fuzz.harness.Finding`, or the untyped exception itself).

Two drivers run the same targets:

* ``make fuzz`` (``python -m fuzz``): atheris, coverage-guided, each target for a bounded time
  (``FUZZ_SECONDS``, default 60) in its own process, seeded from valid samples made by the
  project's own signer and a freshly generated PKI (:mod:`fuzz.material`); the corpus it grows
  is kept in ``.fuzz/corpus/<target>/`` and what it finds in ``.fuzz/findings/<target>/``.
* ``tests/test_fuzz.py``: hypothesis, a short bounded run of every target inside the test suite
  (seeds mutated byte-wise, plus random bytes).

This package imports nothing of ``stirshaken`` at import time, so that the atheris driver can
instrument the project's modules when the targets import them.
"""
