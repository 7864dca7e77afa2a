"""Setup functions of the bad-input matrix: ``SETUPS[name](tmp, out)`` prepares the files a
case needs (a crafted dataset file, a corrupted store, ...) before its command runs.

Each area keeps its functions together in its own block; register them with ``@setup``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

SETUPS: dict[str, Callable[[Path, Path], None]] = {}


def setup(fn: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    if fn.__name__ in SETUPS:
        raise ValueError(f"duplicate bad-input setup {fn.__name__!r}")
    SETUPS[fn.__name__] = fn
    return fn


@setup
def out_is_a_file(tmp: Path, out: Path) -> None:
    """The run directory path exists as a regular file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("not a directory\n")


# -- area: spec plugins ---------------------------------------------------------------------

@setup
def plugin_files(tmp: Path, out: Path) -> None:
    """Plugins beside the spec: one whose import raises, one registering a built-in op's name."""
    (tmp / "boom.py").write_text("raise RuntimeError('this plugin needs a GPU')\n")
    (tmp / "dup_train.py").write_text("from compressflow.registries import OPS\n\n\n"
                                      "@OPS.register\ndef train(ctx):\n    pass\n")


# -- area: rundir (the run directory: results store, records, lock) ---------------------------

_held_locks: list = []  # open files holding a run lock for the rest of this process


def _run_dir(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    return out


@setup
def rundir_foreign_results_folder(tmp: Path, out: Path) -> None:
    """OUT/results.zarr is someone's folder (with a file in it)."""
    (_run_dir(out) / "results.zarr").mkdir()
    (out / "results.zarr" / "notes.txt").write_text("mine\n")


@setup
def rundir_results_is_a_file(tmp: Path, out: Path) -> None:
    (_run_dir(out) / "results.zarr").write_text("not a store\n")


@setup
def rundir_results_is_a_link(tmp: Path, out: Path) -> None:
    (tmp / "elsewhere").mkdir()
    (_run_dir(out) / "results.zarr").symlink_to(tmp / "elsewhere")


@setup
def rundir_foreign_zarr_group(tmp: Path, out: Path) -> None:
    """Another program's Zarr v3 group named results.zarr."""
    import json

    (_run_dir(out) / "results.zarr").mkdir()
    (out / "results.zarr" / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                                "attributes": {"title": "my data"}}))


@setup
def rundir_results_zarr_json_garbage(tmp: Path, out: Path) -> None:
    (_run_dir(out) / "results.zarr").mkdir()
    (out / "results.zarr" / "zarr.json").write_bytes(b"\xff\xfe not json")


@setup
def rundir_store_with_stray_file(tmp: Path, out: Path) -> None:
    """A compressflow store with a user's file put inside it."""
    import json

    store = _run_dir(out) / "results.zarr"
    (store / "tasks").mkdir(parents=True)
    (store / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                 "attributes": {"compressflow_results": 1}}))
    (store / "tasks" / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    (store / "tasks" / "analysis.ipynb").write_text("{}")


def _file_at(name: str):
    def make(tmp: Path, out: Path) -> None:
        (_run_dir(out) / name).write_text("a file\n")

    make.__name__ = f"rundir_{name}_is_a_file"
    return setup(make)


for _name in ("records", "attempts", "artifacts", "rejected"):
    _file_at(_name)


@setup
def rundir_records_is_a_broken_link(tmp: Path, out: Path) -> None:
    (_run_dir(out) / "records").symlink_to(tmp / "gone")


@setup
def rundir_someones_folder(tmp: Path, out: Path) -> None:
    """--out names a folder of someone's files, with nothing of compressflow's in it."""
    (_run_dir(out) / "thesis.tex").write_text("\\documentclass{article}\n")


@setup
def rundir_lock_is_a_directory(tmp: Path, out: Path) -> None:
    (_run_dir(out) / ".lock").mkdir()


@setup
def rundir_lock_is_a_fifo(tmp: Path, out: Path) -> None:
    import os

    os.mkfifo(_run_dir(out) / ".lock")  # opening it to read would wait for a writer forever


@setup
def rundir_locked_by_another_run(tmp: Path, out: Path) -> None:
    """Another run holds OUT/.lock (a lock on another open file: flock locks are per open
    file, so a second open in this process conflicts as another process's would)."""
    import fcntl

    fh = open(_run_dir(out) / ".lock", "a+", encoding="utf-8")
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fh.write("pid 4242 on host elsewhere, started 2026-01-01T00:00:00+00:00\n")
    fh.flush()
    _held_locks.append(fh)


@setup
def dashboard_run_dir(tmp: Path, out: Path) -> None:
    """A run directory (with its records folder) at {out}, e.g. for a misspelt path beside it."""
    (_run_dir(out) / "records").mkdir()


@setup
def dashboard_runs_parent(tmp: Path, out: Path) -> None:
    """{out} is the folder of run directories (runs/), not one of them."""
    for name in ("quickstart", "stkd"):
        (_run_dir(out) / name / "records").mkdir(parents=True)


# --- data ---
# Crafted dataset files and damaged stores for tests/bad_input/data.yaml. Each writes a tiny tree
# in the official layout under {tmp} (CIFAR: {tmp}/cifar, Tiny ImageNet: {tmp}/tin) and then
# spoils one file, or a hand-built results store under {out}; the cases point `data.root` there.

import io as _io
import os as _os
import pickle as _pickle
import zlib as _zlib

_CIFAR10 = ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta",
            b"labels", b"label_names")
_CIFAR100 = ("cifar-100-python", ["train"], "test", "meta", b"fine_labels", b"fine_label_names")


class _Payload:
    """Unpickling this calls ``call(*args)``: what a crafted batch hides."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _cifar(tmp: Path, layout=_CIFAR10, **override) -> Path:
    """An official-format CIFAR tree of 2 classes (2 images per file); ``override`` maps a file
    name to the dict or raw bytes to write there instead."""
    import numpy as np

    folder, train, test, meta, label_key, names_key = layout
    where = tmp / "cifar" / folder
    where.mkdir(parents=True)
    files = {meta: {names_key: [b"cat", b"dog"], b"num_vis": 3072}}
    for i, name in enumerate([*train, test]):
        files[name] = {b"batch_label": name.encode(), label_key: [0, 1],
                       b"data": np.full((2, 3072), i, dtype=np.uint8), b"filenames": [b"a.png", b"b.png"]}
    for name, content in {**files, **override}.items():
        if content is None:
            continue
        data = content if isinstance(content, bytes) else _pickle.dumps(content, protocol=2)
        (where / name).write_bytes(data)
    return where


@setup
def cifar10_batch_runs_shell(tmp: Path, out: Path) -> None:
    """data_batch_1 would run `touch {tmp}/pwned` through os.system when unpickled."""
    _cifar(tmp, data_batch_1={b"data": _Payload(_os.system, f"touch {tmp / 'pwned'}"), b"labels": [0]})


@setup
def cifar10_batch_opens_file(tmp: Path, out: Path) -> None:
    """test_batch would create {tmp}/pwned through open(..., 'w') when unpickled."""
    _cifar(tmp, test_batch={b"data": _Payload(open, str(tmp / "pwned"), "w"), b"labels": [0]})


@setup
def cifar100_train_evals(tmp: Path, out: Path) -> None:
    """cifar100's train file would eval a string (builtins.eval)."""
    _cifar(tmp, _CIFAR100, train={b"data": _Payload(eval, "print('pwned')"), b"fine_labels": [0]})


@setup
def cifar10_meta_allocates(tmp: Path, out: Path) -> None:
    """batches.meta asks numpy's _reconstruct for a 1 TB array (how numpy never pickles one)."""
    _cifar(tmp, **{"batches.meta": b"(dp0\nS'label_names'\ncnumpy.core.multiarray\n_reconstruct\n"
                                   b"(cnumpy\nndarray\n(I1000000000000\ntS'b'\ntRs."})


@setup
def cifar10_missing_batch(tmp: Path, out: Path) -> None:
    _cifar(tmp, data_batch_3=None)


@setup
def cifar10_truncated_batch(tmp: Path, out: Path) -> None:
    import numpy as np

    full = _pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=2)
    _cifar(tmp, data_batch_2=full[: len(full) // 2])


@setup
def cifar10_wrong_shape(tmp: Path, out: Path) -> None:
    import numpy as np

    _cifar(tmp, data_batch_4={b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]})  # grey 32×32 rows


@setup
def cifar10_labels_out_of_range(tmp: Path, out: Path) -> None:
    import numpy as np

    _cifar(tmp, test_batch={b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 7]})


@setup
def cifar10_float_pixels(tmp: Path, out: Path) -> None:
    import numpy as np

    _cifar(tmp, data_batch_1={b"data": np.full((2, 3072), 0.5, np.float32), b"labels": [0, 1]})


@setup
def cifar10_meta_not_a_dict(tmp: Path, out: Path) -> None:
    _cifar(tmp, **{"batches.meta": [b"cat", b"dog"]})


@setup
def cifar100_foreign_file(tmp: Path, out: Path) -> None:
    _cifar(tmp, _CIFAR100, test=b"PK\x03\x04 a zip file, not a pickle")


def _png(width: int, height: int) -> bytes:
    """A PNG header claiming width × height RGB pixels, followed by (at most) 8 rows of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + _zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", _zlib.compress(bytes((1 + 3 * width) * min(height, 8)))) + chunk(b"IEND", b""))


def _tinyimagenet(tmp: Path, spoil: Callable[[Path], None] | None = None) -> Path:
    """An official-layout tiny-imagenet-200 of 2 classes, 2 train images each, 2 val images;
    ``spoil(root)`` then damages it."""
    from PIL import Image

    root = tmp / "tin" / "tiny-imagenet-200"
    wnids = ["n01443537", "n02123045"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for k, wnid in enumerate(wnids):
        (root / "train" / wnid / "images").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (64, 64), (200 * k, 40, 40 + i)).save(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
        Image.new("RGB", (64, 64), (200 * k, 40, 90)).save(root / "val" / "images" / f"val_{k}.JPEG")
    (root / "val" / "val_annotations.txt").write_text("".join(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63\n"
                                                              for k, w in enumerate(wnids)))
    if spoil is not None:
        spoil(root)
    return root


@setup
def tinyimagenet_400mp_png(tmp: Path, out: Path) -> None:
    """A train image whose PNG header claims 20000×20000 pixels (400 MP), in under a kilobyte."""
    _tinyimagenet(tmp, lambda r: (r / "train/n02123045/images/n02123045_1.JPEG").write_bytes(_png(20000, 20000)))


@setup
def tinyimagenet_20mp_png(tmp: Path, out: Path) -> None:
    """5000×4000: under PIL's own bomb limit, over compressflow's MAX_IMAGE_PIXELS."""
    _tinyimagenet(tmp, lambda r: (r / "val/images/val_1.JPEG").write_bytes(_png(5000, 4000)))


@setup
def tinyimagenet_garbage_jpeg(tmp: Path, out: Path) -> None:
    _tinyimagenet(tmp, lambda r: (r / "train/n01443537/images/n01443537_1.JPEG").write_bytes(b"GIF? no." * 40))


@setup
def tinyimagenet_truncated_jpeg(tmp: Path, out: Path) -> None:
    from PIL import Image

    def spoil(root: Path) -> None:
        buf = _io.BytesIO()
        Image.effect_noise((64, 64), 60).convert("RGB").save(buf, "JPEG", quality=95)
        (root / "val/images/val_0.JPEG").write_bytes(buf.getvalue()[:1500])

    _tinyimagenet(tmp, spoil)


@setup
def tinyimagenet_missing_val_image(tmp: Path, out: Path) -> None:
    _tinyimagenet(tmp, lambda r: (r / "val/images/val_1.JPEG").unlink())


@setup
def tinyimagenet_wnids_not_utf8(tmp: Path, out: Path) -> None:
    _tinyimagenet(tmp, lambda r: (r / "wnids.txt").write_bytes(b"n01443537\n\xff\xfen02123045\n"))


@setup
def tinyimagenet_annotations_not_utf8(tmp: Path, out: Path) -> None:
    _tinyimagenet(tmp, lambda r: (r / "val/val_annotations.txt").write_bytes(b"val_0.JPEG\t\x80\x81\n"))


def _results(out: Path) -> Path:
    """``out/results.zarr`` as save_results writes it, from a small hand-built tree."""
    import numpy as np
    import xarray as xr

    from compressflow.results import save_results

    ledger = xr.Dataset(
        {"stage": ("task", ["teacher", "test"]), "op": ("task", ["train", "evaluate"]),
         "status": ("task", ["ok", "ok"]), "duration_s": ("task", np.array([1.5, 0.25])),
         "energy_kwh": ("task", np.array([1e-5, 2e-6])), "co2_g": ("task", np.array([0.004, 0.0008]))},
        coords={"task": ["train-1", "evaluate-2"]})
    tree = xr.DataTree.from_dict({"/tasks": ledger, "/teacher": xr.Dataset({"accuracy": 0.9}),
                                  "/test": xr.Dataset({"accuracy": 0.875})})
    return save_results(tree, out)


@setup
def results_chunk_corrupted(tmp: Path, out: Path) -> None:
    (_results(out) / "tasks" / "duration_s" / "c" / "0").write_bytes(b"junk")


@setup
def results_chunk_truncated(tmp: Path, out: Path) -> None:
    chunk = _results(out) / "teacher" / "accuracy" / "c"
    chunk.write_bytes(chunk.read_bytes()[:6])


@setup
def results_metadata_corrupted(tmp: Path, out: Path) -> None:
    (_results(out) / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gro')


@setup
def results_foreign_store(tmp: Path, out: Path) -> None:
    """A Zarr group another program wrote: no /tasks ledger."""
    import xarray as xr

    from compressflow.results import save_results

    save_results(xr.DataTree.from_dict({"/images": xr.Dataset({"x": ("i", [1, 2, 3])})}), out)


@setup
def results_store_is_a_file(tmp: Path, out: Path) -> None:
    out.mkdir(parents=True)
    (out / "results.zarr").write_text("not a store\n")


# --- cluster (cluster specs) ---------------------------------------------------------------

@setup
def cluster_not_utf8(tmp: Path, out: Path) -> None:
    """A cluster spec saved as Latin-1: byte 11 is é (0xE9), not valid UTF-8."""
    (tmp / "latin1.yaml").write_bytes("# host: caf\u00e9\nkind: local\n".encode("latin-1"))


# --- special files (a FIFO, a link to /dev/zero) where compressflow reads user files -----------

@setup
def results_chunk_fifo(tmp: Path, out: Path) -> None:
    """A chunk of results.zarr is a FIFO: Zarr would block opening it."""
    from tests.support.special_files import make_special

    make_special(_results(out) / "tasks" / "duration_s" / "c" / "0", "fifo")


@setup
def plugin_folder_dev_zero(tmp: Path, out: Path) -> None:
    """A plugin package folder holding a link to /dev/zero (read whole, it never ends)."""
    from tests.support.special_files import make_special

    (tmp / "zero_pkg").mkdir()
    (tmp / "zero_pkg" / "__init__.py").write_text("")
    make_special(tmp / "zero_pkg" / "weights.bin", "dev-zero")


@setup
def tinyimagenet_wnids_dev_zero(tmp: Path, out: Path) -> None:
    from tests.support.special_files import make_special

    _tinyimagenet(tmp, lambda r: make_special(r / "wnids.txt", "dev-zero"))


@setup
def voc_annotation_billion_laughs(tmp: Path, out: Path) -> None:
    """An official-layout VOC2007 folder whose annotation 000002.xml declares nested entities."""
    from tests.support.datasets import BOMB, voc_xml, write_voc

    base = write_voc(tmp / "voc")
    (base / "Annotations" / "000002.xml").write_text(
        voc_xml(32, 32, [("tvmonitor", 5, 6, 7, 8, 0)], extra=BOMB).replace("VOC2007", "&lol3;"))
