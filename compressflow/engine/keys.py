"""Task keys: what a task computes, hashed, so a finished record is reused exactly when the
same work is asked for again.

A key is ``f"{op}-{digest}"``, where ``digest`` is the first :data:`KEY_HEX_CHARS` (32)
hexadecimal characters (128 bits) of the SHA-256 of the UTF-8 bytes of the canonical JSON
(:func:`canonical_json`) of the mapping::

    {"format": KEY_FORMAT, "op": op, "version": <op's code version>,
     "params": <validated params, defaults filled in>,
     "data": <the data options the dataset uses, with "dataset">,
     "needs": {<input>: <upstream key> or [<upstream keys>, in the order the op receives them]},
     "code": <hex SHA-256 of a user op's source>}       # a user op's only (see below)

Everything that changes what a task computes is in it, and nothing else: not the stage's
name, not whether a value was a parameter or a sweep axis, not the order of keys in the
spec, not a data option the dataset ignores (``num_samples`` for ``digits``), and not the
version of Dask or of any other library. The op's ``version`` (``@OPS.register(version=2)``)
is how a code change that alters an op's results invalidates its finished records, and,
through ``needs``, everything downstream of them.

``code`` is there for an op defined outside the ``compressflow`` package only (a plugin, a
notebook), :func:`op_code`: the digest of its source as it is on disk when the graph is
expanded (:func:`compressflow._code_digest.code_digest`), so an edited op runs again without
a ``version`` bump. A built-in op's key has no ``code`` entry: its keys stay what they were.
An op registered with ``key_source=False`` has none either (its records keep the digest, and
the resume plan warns when it changed); an op whose source cannot be read has none, and a
warning says its edits cannot be detected. Keys are computed on the client only; a worker
refuses to run a task whose ``code`` is not the source it imported
(:func:`compressflow.engine.execute.execute_task`).

``uses`` is there for a task that names a user's model, loss, replacement block or dataset
(a plugin's ``@MODELS.register``, ...) in its parameters or data options, a built-in op's task
included (:func:`user_components`): ``{"model:tiny_mlp": <digest of its source>, ...}``, so a
``train`` task of an edited user model runs again too. Built-in components add nothing.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import numbers
from collections.abc import Mapping
from types import EllipsisType
from typing import Any

from compressflow._code_digest import code_digest, is_builtin
from compressflow.registries import BLOCKS, DATASETS, LOSSES, MODELS, OPS

__all__ = ["COMPONENTS", "KEY_FORMAT", "KEY_HEX_CHARS", "canonical_json", "dataset_options", "op_code", "source_digest",
           "task_key", "user_components"]

log = logging.getLogger("compressflow.keys")
_unreadable: set[str] = set()  # ops whose source could not be read, warned about once per process

#: the version of this key scheme itself; part of every key, bumped if the rules below change
KEY_FORMAT = 1
#: hexadecimal characters of the SHA-256 digest kept in a key (128 bits: collisions are not a concern)
KEY_HEX_CHARS = 32


def canonical_json(obj: Any) -> str:
    """The one JSON text of ``obj`` that every equal value maps to.

    Rules: mapping keys must be strings and are sorted; no whitespace (separators ``,``
    and ``:``); tuples and lists are both arrays (order kept); ``None``/``True``/``False``
    are ``null``/``true``/``false``; an integral finite float is written as the integer it
    equals (``4.0`` → ``4``, so numbers equal in Python have one text), any other finite
    float in Python's shortest round-trip form (``0.1``, ``1e-05``), and the non-finite
    ones as ``NaN``, ``Infinity``, ``-Infinity``; numpy scalars count as their Python
    value; strings are escaped to ASCII (``\\uXXXX``). Any other type is refused rather
    than guessed at.

    Parameters
    ----------
    obj : JSON-like
        Nested mappings, lists, tuples, strings, numbers, booleans and ``None``.

    Returns
    -------
    str

    Raises
    ------
    TypeError
        For a value of another type, or a mapping key that is not a string.

    Examples
    --------
    >>> canonical_json({"b": 4.0, "a": (1, 2.5, True, None), "c": {"y": [0.1], "x": "é"}})
    '{"a":[1,2.5,true,null],"b":4,"c":{"x":"\\\\u00e9","y":[0.1]}}'
    """
    return json.dumps(_normalise(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def _normalise(obj: Any) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, numbers.Integral):  # int and numpy integers
        return int(obj)
    if isinstance(obj, numbers.Real):  # float and numpy floats
        x = float(obj)
        return int(x) if math.isfinite(x) and x.is_integer() else x
    if isinstance(obj, Mapping):
        bad = [k for k in obj if not isinstance(k, str)]
        if bad:
            raise TypeError(f"task key: mapping key {bad[0]!r} is not a string")
        return {k: _normalise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_normalise(v) for v in obj]
    if hasattr(obj, "dtype") and getattr(obj, "shape", None) == () and hasattr(obj, "item"):  # numpy bool_
        return _normalise(obj.item())
    raise TypeError(f"task key: cannot key a value of type {type(obj).__name__} ({obj!r})")


def dataset_options(data: Mapping[str, Any]) -> dict[str, Any]:
    """The options of the spec's ``data`` block that its dataset takes, with ``dataset``.

    The dataset's registered loader says which options it uses: its keyword parameters
    (one that takes ``**kwargs`` uses them all). So ``root`` does not count for
    ``digits``, nor ``num_samples``/``num_classes`` for anything but ``synthetic``.

    Parameters
    ----------
    data : mapping
        :meth:`compressflow.spec.DataSpec.options`: ``dataset`` plus every option.

    Returns
    -------
    dict

    Examples
    --------
    >>> import compressflow.data
    >>> opts = {"dataset": "digits", "image_size": 8, "seed": 0, "root": "/data", "num_samples": 500}
    >>> dataset_options(opts)
    {'dataset': 'digits', 'image_size': 8, 'seed': 0}
    >>> sorted(dataset_options({**opts, "dataset": "synthetic"}))
    ['dataset', 'image_size', 'num_samples', 'seed']
    """
    params = inspect.signature(DATASETS.get(data["dataset"])).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(data)
    return {k: v for k, v in data.items() if k == "dataset" or k in params}


def source_digest(op: str) -> str | None:
    """The digest of user op ``op``'s source as it is on disk now; None for a built-in op or
    one whose source cannot be read.

    Raises
    ------
    UnknownNameError
        If ``op`` is not registered.
    """
    fn = OPS.get(op)
    return None if is_builtin(fn) else code_digest(fn)


def op_code(op: str) -> str | None:
    """The ``code`` entry of ``op``'s task keys: the digest of its source for a user op
    (:func:`source_digest`), None for a built-in op or one registered with
    ``key_source=False``.

    A user op whose source cannot be read has none: a warning, once per op, says that its
    edits cannot be detected.

    Examples
    --------
    >>> import compressflow.ops
    >>> op_code("train") is None  # a built-in op: its version is its code's identity
    True
    """
    if not OPS.info(op)["key_source"]:
        return None
    fn = OPS.get(op)
    if is_builtin(fn):
        return None
    digest = code_digest(fn)
    if digest is None and op not in _unreadable:
        _unreadable.add(op)
        log.warning(f"compressflow: warning: op {op!r}: its source cannot be read, so an edit to it cannot be "
                    f"detected; bump version= in @OPS.register when you change what it computes")
    return digest


#: registries whose user entries a task may name in its parameters (or data options: a dataset)
COMPONENTS = (("model", MODELS), ("loss", LOSSES), ("block", BLOCKS), ("dataset", DATASETS))


def user_components(params: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, str]:
    """``{"<kind>:<name>": digest}`` of every user-defined model, loss, block or dataset a task
    names: a string parameter (or an item of a list of them) that is a registered name of a
    component defined outside ``compressflow``, and the dataset; the digest is its source's
    (:func:`compressflow._code_digest.code_digest`). Empty for built-in components, so their
    tasks' keys have no ``uses`` entry.

    Examples
    --------
    >>> import compressflow.ops
    >>> user_components({"model": "resnet18", "loss": "hkd"}, {"dataset": "digits"})
    {}
    """
    names = {v for v in params.values() if isinstance(v, str)}
    names |= {i for v in params.values() if isinstance(v, (list, tuple)) for i in v if isinstance(i, str)}
    dataset = data.get("dataset")
    uses: dict[str, str] = {}
    for kind, registry in COMPONENTS:
        candidates = ([dataset] if isinstance(dataset, str) else []) if kind == "dataset" else sorted(names)
        for name in candidates:
            if name not in registry:
                continue
            item = registry.get(name)
            if not is_builtin(item):
                uses[f"{kind}:{name}"] = code_digest(item) or ""
    return uses


def task_key(op: str, params: Mapping[str, Any], data: Mapping[str, Any],
             needs: Mapping[str, str | tuple[str, ...]], *, version: int | None = None,
             code: str | None | EllipsisType = ...) -> str:
    """The key of the task running ``op`` on ``params``, ``data`` and upstream ``needs``.

    Parameters
    ----------
    op : str
        A registered op.
    params : mapping
        The op's validated parameters (defaults filled in).
    data : mapping
        The spec's data options (:meth:`~compressflow.spec.DataSpec.options`); only the
        ones the dataset uses count (:func:`dataset_options`).
    needs : mapping
        Input name → the upstream task's key, or a sequence of keys for a fan-in input.
    version : int, optional
        The op's code version; default: the one it was registered with
        (:meth:`compressflow._registry.OpRegistry.version`).
    code : str or None, optional
        The digest of the op's source; default: :func:`op_code` (None for a built-in op).
        None: the key has no ``code`` entry.

    Returns
    -------
    str
        ``f"{op}-{first 32 hex characters of sha256(canonical JSON)}"`` (module docstring).

    Examples
    --------
    >>> import compressflow.data
    >>> data = {"dataset": "digits", "image_size": 8, "num_samples": 1000}
    >>> task_key("wait", {"seconds": 0.5, "busy": False, "label": 3}, data, {}, version=1)
    'wait-22c8950dbf5ad6f639005889063be2bc'
    >>> task_key("wait", {"label": 3, "busy": False, "seconds": 0.5}, {**data, "num_samples": 9}, {}, version=1)
    'wait-22c8950dbf5ad6f639005889063be2bc'
    """
    payload = {
        "format": KEY_FORMAT,
        "op": op,
        "version": OPS.version(op) if version is None else version,
        "params": params,
        "data": dataset_options(data),
        "needs": needs,
    }
    code = op_code(op) if code is ... else code
    if code is not None:
        payload["code"] = code
    uses = user_components(params, data)
    if uses:
        payload["uses"] = uses
    digest = hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()
    return f"{op}-{digest[:KEY_HEX_CHARS]}"
