"""Outbound network adapters shared by the STI-VS and the PKI clients (see :mod:`stirshaken.net.http`)."""
