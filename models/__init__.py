"""The model zoo: one Pyro program per module, each with its ModelSpec called SPEC."""

__all__: list[str] = []
