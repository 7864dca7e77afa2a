"""Neural-network building blocks: the model registry (``compressflow.nn.models``) and,
alongside it, KD losses, replacement blocks and module surgery."""

__all__: list[str] = []
