"""Reading small YAML data files — pipeline specs and cluster specs — with bounds: a spec is
data a user may have downloaded, so it may not expand without limit (an alias bomb), nest
until the parser recurses out, hide a duplicate key (YAML keeps the last silently) or
construct objects."""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from compressflow._regular_files import FileRefused, open_regular
from compressflow.errors import SpecError

__all__ = ["MAX_SPEC_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "read_yaml"]

#: the largest spec file read
MAX_SPEC_BYTES = 4 * 2**20
#: the deepest YAML nesting accepted (a spec needs about six levels)
MAX_YAML_DEPTH = 32
#: the most YAML nodes a spec may expand to, each alias counted as a copy of its anchor
MAX_YAML_NODES = 100_000


def read_yaml(path: str | os.PathLike, *, field: str, what: str, lines: dict[tuple, int] | None = None) -> Any:
    """Read a small YAML data file (a pipeline or cluster spec) with bounds.

    The file must be a regular file (not a FIFO or a device), UTF-8, at most
    :data:`MAX_SPEC_BYTES`, nested at most :data:`MAX_YAML_DEPTH` levels, expand to at most
    :data:`MAX_YAML_NODES` nodes (each alias counted as a copy of what it names, before any
    Python object is built) and hold no duplicate key. Only plain data is built (a safe loader).

    Parameters
    ----------
    path : path
    field : str
        What messages start with (``"spec"``, ``"--cluster"``).
    what : str
        What the file is, for messages (``"a spec"``).
    lines : dict, optional
        Filled with the line (from 1) of every mapping key, by its path of keys
        (``("stages", "student")``): where a warning about that part of the file points.

    Raises
    ------
    SpecError
        One line naming the file and what is wrong with it.
    """
    where = str(path)
    try:
        # a regular file, checked on the opened descriptor: a FIFO or a link to /dev/zero is
        # refused at once instead of blocking or reading without end
        with open_regular(path, what=f"{field}:") as f:
            # read(n) allocates n bytes up front: ask for what the file holds
            size = os.fstat(f.fileno()).st_size
            data = f.read(min(size, MAX_SPEC_BYTES) + 1)
    except FileNotFoundError:
        raise SpecError(f"{field}: file {where!r} does not exist") from None
    except FileRefused as exc:
        raise SpecError(f"{exc}; {what} is a small YAML file") from None
    except OSError as exc:
        raise SpecError(f"{field}: cannot read {where!r}: {exc.strerror}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{field}: {where!r} is larger than {MAX_SPEC_BYTES // 2**20} MiB; {what} is a small YAML file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SpecError(f"{field}: {where!r} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                        f"(line {line}) cannot be decoded; save the file as UTF-8") from None
    loader = None
    try:
        # a safe loader: a spec is data and can never construct objects or run code
        loader = _BoundedLoader(text, where, field, what)
        data = loader.get_single_data()
        if lines is not None:
            lines.update(loader.key_lines)
        return data
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow, e.g. NUL
            at = f" at character {exc.position}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{field}: {where!r} is not valid YAML{at}: {problem}") from None
    except SpecError:
        raise
    except ValueError as exc:  # a value YAML resolves but Python refuses, e.g. an integer of 5,000 digits
        raise SpecError(f"{field}: {where!r} holds a value that cannot be read: {str(exc).split(';')[0]}") from None
    finally:
        if loader is not None:
            loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, bounded: nesting depth, the node count with aliases expanded
    (counted while composing, before any Python object is built) and duplicate keys."""

    def __init__(self, text: str, where: str, field: str, what: str) -> None:
        super().__init__(text)
        self._where, self._field, self._what = where, field, what
        self._path: list[Any] = []  # keys leading to the node being composed, for messages
        self._sizes: dict[int, int] = {}  # id(node) -> its node count, aliases expanded
        self.key_lines: dict[tuple, int] = {}  # path of keys -> the line of that key

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        # Python refuses to convert an integer of more than 4,300 digits; say where it is
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            digits = sum(c.isdigit() for c in node.value)
            raise SpecError(f"{self._field}: {self._where!r} line {node.start_mark.line + 1}: an integer of {digits:,} digits "
                            f"({node.value[:12]}...); integers must fit in 64 bits") from None

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        line = event.start_mark.line + 1
        if len(self._path) >= MAX_YAML_DEPTH:
            raise SpecError(f"{self._field}: {self._where!r} nests deeper than {MAX_YAML_DEPTH} levels at line "
                            f"{line}; {self._what} needs only a few")
        self._path.append(index.value if isinstance(index, yaml.ScalarNode) else index)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._path.pop()
        size = self._sizes.get(id(node))
        if size is None:
            if isinstance(event, yaml.AliasEvent):  # the anchored node is still being composed
                raise SpecError(f"{self._field}: {self._where!r} line {line}: the alias *{event.anchor} refers to a "
                                f"node that contains it; {self._what} cannot be recursive")
            children = (node.value if isinstance(node, yaml.SequenceNode)
                        else [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else ())
            size = 1 + sum(self._sizes[id(c)] for c in children)
            if size > MAX_YAML_NODES:
                raise SpecError(f"{self._field}: {self._where!r} expands to more than {MAX_YAML_NODES:,} YAML nodes by line "
                                f"{node.end_mark.line + 1} (each alias counts as a copy of what it names); "
                                f"refusing to build it")
            self._sizes[id(node)] = size
        return node

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], yaml.Node] = {}
        keys = tuple(k for k in self._path if k is not None)
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue  # merge keys (<<) legitimately repeat what they merge
            self.key_lines.setdefault((*keys, key.value), key.start_mark.line + 1)
            earlier = first.setdefault((key.tag, key.value), key)
            if earlier is not key:
                from compressflow.ops.signature import field_path  # late: importing compressflow.ops registers the ops

                where = field_path("", *keys) if keys else self._field
                raise SpecError(f"{where}: duplicate key {key.value!r} at line {key.start_mark.line + 1} of "
                                f"{self._where!r} (first at line {earlier.start_mark.line + 1}); remove one "
                                f"(YAML would silently keep the last)")
        return node


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)
# YAML 1.1 (PyYAML) reads ``1e-3`` as a string: its floats need a dot. Read them as YAML 1.2
# does (``1e-3``, ``1E5``, ``-2.5e-4``), as the user meant; a quoted value stays a string.
_BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))
