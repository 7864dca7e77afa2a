"""Measurements of a model: classification metrics (:mod:`.classification`), representation
similarity (:mod:`.similarity`: SVCCA, CKA), bias (:mod:`.bias`: CEV, SDE) and costs
(:mod:`.flops`)."""

__all__: list[str] = []
