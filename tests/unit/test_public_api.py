"""Every public module of compressflow declares ``__all__``, and ``__all__`` is true: each name
in it is defined in the module (``from m import *`` and the docs rely on it) and none is private."""

import importlib
import importlib.util
import pkgutil

import pytest

import compressflow


def _public_modules() -> list[str]:
    names = [compressflow.__name__]
    for info in pkgutil.walk_packages(compressflow.__path__, prefix=f"{compressflow.__name__}."):
        # a module is private when any part of its dotted name is (``_registry``, ``engine._yaml``,
        # ``__main__``, which would run the CLI)
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names

PUBLIC = _public_modules()


def _is_submodule(module, name: str) -> bool:
    return hasattr(module, "__path__") and importlib.util.find_spec(f"{module.__name__}.{name}") is not None


def test_the_walk_finds_the_packages_and_their_modules():
    # a broken walk (wrong path, prefix) would make the test below vacuous
    for name in ("compressflow", "compressflow.engine.graph", "compressflow.nn.blocks", "compressflow.cli"):
        assert name in PUBLIC
    assert "compressflow._registry" not in PUBLIC and "compressflow.__main__" not in PUBLIC


@pytest.mark.parametrize("name", PUBLIC)
def test_all_is_declared_defined_and_public(name):
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    declared = list(module.__all__)
    assert all(isinstance(n, str) for n in declared), f"{name}.__all__ holds a non-string: {declared!r}"
    # a package may list its submodules: ``from package import *`` imports them
    missing = [n for n in declared if not hasattr(module, n) and not _is_submodule(module, n)]
    assert not missing, f"{name}.__all__ names undefined {missing}"
    private = [n for n in declared if n.startswith("_")]
    assert not private, f"{name}.__all__ names private {private}"
    duplicated = sorted({n for n in declared if declared.count(n) > 1})
    assert not duplicated, f"{name}.__all__ repeats {duplicated}"
