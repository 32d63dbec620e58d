"""Troubleshooting and analytics over the STI-VS: ``stirshaken inspect`` (one call, everything
the verifier sees), ``stirshaken audit`` (captures, SIP logs and call records verified in bulk,
with an HTML/CSV/JSON report) and the web inspector served by ``stirshaken serve``.

Layer: below :mod:`stirshaken.serve` (which imports it for the web page), above
:mod:`stirshaken.vs`, :mod:`stirshaken.net` and :mod:`stirshaken.core`.  Every verdict comes
from :class:`stirshaken.vs.verifier.Verifier`; nothing here re-implements a check.
"""
