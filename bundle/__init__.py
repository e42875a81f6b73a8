"""Sharing the bundle: Model Zoo export (``python -m bundle.export``) and its offline checks
(``python -m bundle.check``)."""
