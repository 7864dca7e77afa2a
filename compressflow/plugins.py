"""User extensions (ops, models, datasets, losses, ...) on the client and on every worker.

Names are looked up in :mod:`compressflow.registries` by string, on the client (to validate a
spec) and on the worker that runs a task, so whatever registers a name must be imported in
both places. Two doors:

* **Installed plugins**: a package declares an entry point in the group ``compressflow.plugins``
  (``[project.entry-points."compressflow.plugins"] my_ops = "my_package.ops"``).
  :func:`compressflow.registries.load` imports it, with compressflow's built-in modules, the
  first time a registry is looked up, in every process, so each worker that has the package
  installed has its names.
* **Plugins of a run**: ``compressflow run SPEC --plugin PATH_OR_MODULE``, the spec key
  ``plugins: [...]`` or ``compressflow.run(spec, plugins=[...])``. Each entry is a ``.py``
  file, a package folder (holding ``__init__.py``) or an importable module name.
  :func:`import_plugins` imports it on the client, before the spec is validated, and
  :func:`compressflow.engine.shipping.install` registers a
  :class:`~compressflow.engine.shipping.ShipPlugin` with the scheduler: the scheduler hands it
  to every current worker and to every worker that joins later, before that worker takes a
  task; it writes the file or folder into the worker's local directory and imports it there.

This module resolves and imports plugins here (no Dask: a spec check does not need it).

A plugin's files are read as regular files with a bound (:data:`MAX_PLUGIN_BYTES` in all), on
the client's import as when they are shipped, so a FIFO or a link to ``/dev/zero`` in a plugin
folder is refused at once with one line naming it (:class:`~compressflow.errors.FileRefused`);
a symbolic link inside a folder that leads out of it is refused too (it would ship a file from
elsewhere, perhaps a private one, to every worker). Each file is written on a worker with the
permission bits it has here.

Why not Dask's ``UploadFile`` / ``UploadDirectory``: ``UploadFile`` *reloads* the module on
every registration, which runs its ``@register`` decorators again (a registry refuses a name
twice), and ``UploadDirectory`` is a nanny plugin that only unpacks (workers started with
``--no-nanny`` never get it, and nothing is imported). A file or package plugin edited since a
process imported it (a second run in a notebook, on a long-lived cluster) is imported again there
when the next run ships it: what it registered is unregistered first (:func:`forget`), so its
decorators run again on a clean slate. A module plugin (installed) is not: restart the workers
after upgrading it; until then the tasks of an op whose source changed fail on such a worker,
saying so (their keys hold the edited source, :mod:`compressflow.engine.keys`), rather than
record the results of the code it imported first.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, NamedTuple

from compressflow._regular_files import check_regular, is_within, open_regular, read_regular
from compressflow.errors import FileRefused, InputError, PluginError, SpecError, one_line, printable

__all__ = ["MAX_PLUGIN_BYTES", "Plugin", "PluginError", "ShippedFile", "dedupe", "edited_since_import", "files_digest",
           "files_of", "forget", "import_plugins", "imported",
           "resolve"]
#: the most a shipped file or folder may hold: it travels through the scheduler to every worker
MAX_PLUGIN_BYTES = 32 * 2**20

_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_KINDS = "a .py file, a package folder (with __init__.py) or a module name"
#: file or package plugin module -> digest of the files it was imported from in this process
_imported: dict[str, str] = {}


# --- plugins of a run: resolve, import on the client, ship to the workers ---------------------

@dataclass(frozen=True)
class Plugin:
    """One plugin of a run, resolved.

    Attributes
    ----------
    kind : {"file", "package", "module"}
        A ``.py`` file, a package folder or an importable module name.
    module : str
        The name it is imported under (the file's stem, the folder's name, the module name).
    path : str or None
        The absolute path of the file or folder; None for a module name.
    where : str
        The field it came from, for messages (``plugins[0]``, ``--plugin``).
    """

    kind: Literal["file", "package", "module"]
    module: str
    path: str | None
    where: str

    @property
    def source(self) -> str:
        """What the spec keeps: the absolute path, or the module name."""
        return self.path or self.module


def resolve(entry: Any, base: str | os.PathLike, where: str) -> Plugin:
    """Resolve one plugin entry; a relative path is taken from ``base``.

    Raises
    ------
    SpecError
        One line naming ``where``: not a string, a missing file, a file that is not ``.py``,
        a folder without ``__init__.py``, or a name that is neither a path nor a module name.
    FileRefused
        The ``.py`` file or the folder's ``__init__.py`` is not a regular file (a FIFO, a device).

    Examples
    --------
    >>> resolve("numpy.linalg", ".", "plugins[0]").kind
    'module'
    >>> resolve("my-ops", ".", "plugins[1]")
    Traceback (most recent call last):
    ...
    compressflow.errors.SpecError: plugins[1]: 'my-ops' is not a file, a folder or a module name; give a .py file, a package folder (with __init__.py) or a module name
    """
    if not isinstance(entry, str) or not entry.strip():
        raise SpecError(f"{where}: expected {_KINDS}, got {entry!r}")
    path = Path(base, os.path.expanduser(entry)).absolute()
    if entry.endswith(".py"):
        if not path.exists():
            raise SpecError(f"{where}: no file {entry!r} (looked for {str(path)!r}); give an existing .py file")
        check_regular(path, what=f"{where}: plugin file")
        return Plugin("file", _import_name(path.stem, entry, where), str(path), where)
    if path.is_dir():
        if not (path / "__init__.py").exists():
            raise SpecError(f"{where}: {entry!r} is a folder but not a package (it has no __init__.py); "
                            f"add one, or give the .py file itself")
        check_regular(path / "__init__.py", what=f"{where}: plugin file")
        return Plugin("package", _import_name(path.name, entry, where), str(path), where)
    if path.exists():
        raise SpecError(f"{where}: {entry!r} is not a .py file; give {_KINDS}")
    if "/" in entry or os.sep in entry:
        raise SpecError(f"{where}: no file or folder {entry!r} (looked for {str(path)!r}); give {_KINDS}")
    if not _MODULE_NAME.fullmatch(entry):
        raise SpecError(f"{where}: {entry!r} is not a file, a folder or a module name; give {_KINDS}")
    return Plugin("module", entry, None, where)


def _import_name(name: str, entry: str, where: str) -> str:
    if not name.isidentifier():
        raise SpecError(f"{where}: {entry!r} cannot be imported as a module named {name!r}; "
                        f"rename it to a Python identifier, e.g. {re.sub(r'[^A-Za-z0-9_]', '_', name)!r}")
    return name


def import_plugins(entries: Any, base: str | os.PathLike = ".", field: str = "plugins") -> list[Plugin]:
    """Resolve and import plugins on this machine (the client), in order.

    Parameters
    ----------
    entries : sequence of str or Plugin
        ``.py`` files, package folders or module names (or plugins resolved before).
    base : path
        The folder relative paths are taken from (the spec file's folder for the spec key,
        the working directory otherwise).
    field : str
        The field named in messages: ``plugins`` gives ``plugins[i]``, a CLI option such as
        ``--plugin`` is named as is.

    Returns
    -------
    list of Plugin
        Ready for :func:`install`.

    Raises
    ------
    SpecError
        A bad entry (see :func:`resolve`) or a module name that cannot be found.
    FileRefused
        A file of a plugin that is not a regular file, or a link out of its folder (see
        :func:`files_of`).
    PluginError
        A plugin whose import raised; the cause is chained.
    """
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
        raise SpecError(f"{field}: expected a list of plugins ({_KINDS} each), got {entries!r}")
    plugins = []
    for i, entry in enumerate(entries):
        if isinstance(entry, Plugin):  # resolved before (the CLI names its own field)
            plugin, entry = entry, entry.source
        else:
            plugin = resolve(entry, base, field if field.startswith("-") else f"{field}[{i}]")
        _import_here(plugin, entry)
        plugins.append(plugin)
    return plugins


def _import_here(plugin: Plugin, entry: str) -> None:
    name = plugin.module
    existing = sys.modules.get(name)
    if existing is not None:
        if plugin.path is not None and not _same_origin(existing, plugin):
            raise SpecError(f"{plugin.where}: a module named {name!r} is already imported from "
                            f"{getattr(existing, '__file__', None)!r}; rename {entry!r}")
        if plugin.path is None or not edited_since_import(name, files_digest(files_of(plugin))):
            return  # imported before (an earlier run in this process, or the spec and --plugin both)
        forget(name)  # edited since: imported again below
    try:
        if plugin.kind == "module":
            importlib.import_module(name)
            return
        files = files_of(plugin)  # every file regular, bounded, inside its folder: before any is imported
        path = Path(plugin.path)  # type: ignore[arg-type]
        init = path if plugin.kind == "file" else path / "__init__.py"
        locations = None if plugin.kind == "file" else [str(path)]
        loader = _regular_loader(plugin.where)
        if plugin.kind == "package":  # its submodules too are read through the bounded loader
            for folder, dirs, _ in os.walk(path):
                dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
                sys.path_importer_cache[folder] = importlib.machinery.FileFinder(
                    folder, (loader, importlib.machinery.SOURCE_SUFFIXES),
                    (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES))
        spec = importlib.util.spec_from_file_location(name, init, loader=loader(name, str(init)),
                                                      submodule_search_locations=locations)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running it, as import does (its own imports may need it)
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        imported(name, files_digest(files))
    except ModuleNotFoundError as exc:
        if plugin.kind == "module" and exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise SpecError(f"{plugin.where}: no module named {name!r} here; install it, or give "
                            f"a .py file or a package folder") from None
        raise PluginError(f"{plugin.where}: importing {entry!r} failed: {type(exc).__name__}: {one_line(exc)}") from exc
    except InputError:
        raise
    except Exception as exc:
        raise PluginError(f"{plugin.where}: importing {entry!r} failed: {type(exc).__name__}: {one_line(exc)}") from exc


def files_digest(files: Mapping[str, ShippedFile]) -> str:
    """A plugin's identity as shipped: the SHA-256 (16 hex digits) of its files' relative paths,
    contents and permission bits (:func:`files_of`)."""
    digest = hashlib.sha256()
    for rel, shipped in sorted(files.items()):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(shipped.data).digest() + shipped.mode.to_bytes(2, "big"))
    return digest.hexdigest()[:16]


def imported(module: str, digest: str) -> None:
    """Note that file or package plugin ``module`` was imported in this process from files of
    ``digest`` (:func:`files_digest`)."""
    _imported[module] = digest


def edited_since_import(module: str, digest: str) -> bool:
    """Whether ``module`` was imported in this process from files other than those of ``digest``
    (False when it was not imported here as a plugin)."""
    return _imported.get(module, digest) != digest


def forget(module: str) -> None:
    """Undo the import of plugin ``module`` in this process: unregister every name it (or a
    submodule) registered, in every registry, and drop the modules, so importing it again runs
    its edited source on a clean slate (a registry refuses a name twice)."""
    from compressflow import registries

    for registry in (registries.MODELS, registries.DATASETS, registries.OPS, registries.LOSSES, registries.BLOCKS,
                     registries.SUMMARIES):
        registry.forget(module)
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        del sys.modules[name]
    _imported.pop(module, None)


def _same_origin(module: ModuleType, plugin: Plugin) -> bool:
    file = getattr(module, "__file__", None)
    if file is None:
        return False
    target = Path(plugin.path) if plugin.kind == "file" else Path(plugin.path, "__init__.py")  # type: ignore[arg-type]
    try:
        return Path(file).resolve() == target.resolve()
    except OSError:
        return False


def _regular_loader(where: str) -> type[importlib.machinery.SourceFileLoader]:
    """Python's source loader, reading sources and bytecode caches as bounded regular files
    (its own ``open`` would block on a FIFO, and read a link to ``/dev/zero`` forever)."""

    class RegularSourceLoader(importlib.machinery.SourceFileLoader):
        def get_data(self, path: str) -> bytes:
            return read_regular(path, MAX_PLUGIN_BYTES, what=f"{where}: plugin file")

    return RegularSourceLoader


class ShippedFile(NamedTuple):
    """One file a plugin ships: its bytes and its permission bits (kept on the worker)."""

    data: bytes
    mode: int


def files_of(plugin: Plugin) -> dict[str, ShippedFile]:
    """Relative path → file of what a file or package plugin ships (no caches, no hidden files).

    Raises
    ------
    FileRefused
        A file that is not a regular file (a FIFO, a link to a device), or a symbolic link in
        the folder that leads out of it; one line naming it.
    SpecError
        More than :data:`MAX_PLUGIN_BYTES` in all.
    """
    if plugin.path is None:
        return {}
    root = Path(plugin.path)
    if plugin.kind == "file":
        return {root.name: _read_shipped(root, MAX_PLUGIN_BYTES, plugin)}
    files: dict[str, ShippedFile] = {}
    total = 0
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in sorted(names):
            if name.startswith(".") or name.endswith((".pyc", ".pyo")):
                continue
            path = Path(folder, name)
            if path.is_symlink() and not is_within(path, root):
                raise FileRefused(f"{plugin.where}: plugin file {printable(path)} is a symbolic link to "
                                  f"{printable(os.path.realpath(path))}, outside the folder {printable(root)}; "
                                  "copy what the plugin needs into the folder")
            shipped = _read_shipped(path, MAX_PLUGIN_BYTES - total, plugin)
            total += len(shipped.data)
            files[str(Path(root.name, path.relative_to(root)))] = shipped
    return files


def _read_shipped(path: Path, budget: int, plugin: Plugin) -> ShippedFile:
    with open_regular(path, what=f"{plugin.where}: plugin file") as fh:
        mode = os.fstat(fh.fileno()).st_mode & 0o777
        data = fh.read(budget + 1)
    if len(data) > budget:
        raise SpecError(f"{plugin.where}: {printable(plugin.path or path)} holds more than "
                        f"{MAX_PLUGIN_BYTES // 2**20} MiB; ship code only (keep data elsewhere)")
    return ShippedFile(data, mode)


def dedupe(plugins: Iterable[Plugin]) -> list[Plugin]:
    """The first of every module name (the spec and ``--plugin`` may name the same one)."""
    seen: dict[str, Plugin] = {}
    for plugin in plugins:
        seen.setdefault(plugin.module, plugin)
    return list(seen.values())
