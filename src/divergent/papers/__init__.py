"""One module per seed paper; each registers a reproduction with ``@reproduction``.

Modules here are discovered automatically by :func:`divergent.repro.discover`.
"""
