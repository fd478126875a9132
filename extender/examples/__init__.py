"""Example snapshots shipped with the package (``cluster.yaml`` is ``simulate``'s default cluster)."""
