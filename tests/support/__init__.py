"""What tests share besides fixtures (those are in conftest.py): the repository's root and a
tiny spec that runs in seconds."""

from __future__ import annotations

from pathlib import Path

#: the repository's root (tasks/, clusters/, notebooks/, README.md, pyproject.toml)
ROOT = Path(__file__).resolve().parents[2]


def tiny_spec(**stage_overrides):
    """A two-stage pipeline small enough to run in seconds."""
    teacher = {"op": "train", "params": {"model": "resnet18", "width": 0.125, "epochs": 1, "batch_size": 128}}
    teacher.update(stage_overrides)
    return {
        "name": "tiny",
        "data": {"dataset": "digits", "image_size": 8, "channels": 1},
        "stages": {"teacher": teacher, "test": {"op": "evaluate", "needs": {"model": "teacher"}}},
    }
