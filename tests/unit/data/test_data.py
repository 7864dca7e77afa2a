"""compressflow.data: the real digits set, official-format CIFAR/Tiny ImageNet files written here, batching."""

from __future__ import annotations

import io
import math
import os
import pickle
import re
import shutil
import statistics
import time
import warnings
import zlib
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from compressflow.data import AUGMENT_OPS, Split, augment_batch, batches, load_splits
from compressflow.errors import DataError
from compressflow.registries import DATASETS, UnknownNameError


def raw(splits, split, scale: float = 255.0) -> np.ndarray:
    """Undo the normalisation and scaling: the pixels as they were stored."""
    mean = torch.tensor(splits.mean).view(1, -1, 1, 1)
    std = torch.tensor(splits.std).view(1, -1, 1, 1)
    return ((split.x * std + mean) * scale).round().to(torch.int64).numpy()


def keyed(images: np.ndarray, labels) -> Counter:
    """Multiset of (image bytes, label): equal multisets mean same images, same labels, nothing twice."""
    return Counter((img.astype(np.uint8).tobytes(), int(lab)) for img, lab in zip(images, labels))


@pytest.fixture(scope="module")
def sk_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.int64)[:, None], d.target


def test_digits_partition_exact_and_stratified(sk_digits):
    images, labels = sk_digits
    s = DATASETS.get("digits")(image_size=8, channels=1)  # native size: pixels recoverable exactly
    assert (len(s.train), len(s.val), len(s.test)) == (1797 - 270 - 360, 270, 360)  # ceil(.15·N), ceil(.2·N)
    parts = [keyed(raw(s, split, 16.0), split.y) for split in (s.train, s.val, s.test)]
    assert parts[0] + parts[1] + parts[2] == keyed(images, labels)  # disjoint, complete, labels kept
    full = np.bincount(labels, minlength=10)
    for split, frac in ((s.test, 0.2), (s.val, 0.15)):
        counts = np.bincount(split.y.numpy(), minlength=10)
        assert (counts > 0).all() and np.abs(counts - frac * full).max() <= 1.5
    assert s.class_names == tuple("0123456789") and s.num_classes == 10
    assert s.augment == ("crop", "rotate")  # a mirrored digit is another glyph: never flip


def test_digits_seed_decides_the_split():
    a, b = DATASETS.get("digits")(seed=3), DATASETS.get("digits")(seed=3)
    c = DATASETS.get("digits")(seed=4)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y)
    assert a.test.x.shape == c.test.x.shape and not torch.equal(a.test.x, c.test.x)


@pytest.mark.parametrize("channels", [1, 3])
def test_digits_shapes_and_normalisation(channels):
    s = DATASETS.get("digits")(image_size=16, channels=channels)
    assert s.train.x.shape == (len(s.train), channels, 16, 16) and s.train.x.dtype == torch.float32
    assert s.train.y.dtype == torch.int64 and s.sample_shape == (channels, 16, 16)
    mean, std = s.train.x.mean((0, 2, 3)), s.train.x.std((0, 2, 3))
    assert torch.allclose(mean, torch.zeros(channels), atol=1e-4)
    assert torch.allclose(std, torch.ones(channels), atol=1e-3)
    assert abs(s.val.x.mean().item()) < 0.1  # val uses the train statistics: close to, not exactly, 0
    if channels == 3:
        assert torch.equal(s.train.x[:, 0], s.train.x[:, 2])  # the grey channel replicated
    pixels = raw(s, s.train, 16.0)
    assert pixels.min() == 0 and pixels.max() == 16  # bilinear upsampling stays within the 0..16 range


def test_load_splits_caches_and_ignores_irrelevant_options():
    a = load_splits("digits", image_size=8)
    assert load_splits("digits", image_size=8, root="/nowhere", num_samples=7, num_classes=3) is a
    assert load_splits("digits", image_size=8, augment=["rotate", "crop"]).augment == ("crop", "rotate")
    with pytest.raises(UnknownNameError, match="valid choices: cifar10, cifar100, digits, synthetic, tinyimagenet"):
        load_splits("mnist")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"image_size": 3}, "image_size must be an integer >= 4, got 3"),
        ({"channels": 2}, "channels must be 1 (grey) or 3 (RGB), got 2"),
        ({"val_fraction": 0.0}, "val_fraction must be a number strictly between 0 and 1, got 0.0"),
        ({"test_fraction": 1.5}, "test_fraction must be a number strictly between 0 and 1, got 1.5"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction + test_fraction must be < 1"),
        ({"augment": ("crop", "blur")}, "augment has unknown op 'blur'; valid choices: crop, flip, rotate"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
    ],
)
def test_bad_options_name_field_value_and_choices(options, expected):
    with pytest.raises(DataError) as info:
        load_splits("digits", **options)
    assert expected in str(info.value) and "\n" not in str(info.value)

CIFAR = {  # folder, train files, test file, meta file, label key, label-names key
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta",
                b"labels", b"label_names"),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", b"fine_labels", b"fine_label_names"),
}


class Py2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for the official batches: bytes as Python 2 ``str``
    (SHORT_BINSTRING/BINSTRING, or STRING at protocol 0, never ``_codecs.encode``) and numpy's
    globals under their numpy-1 module ``numpy.core.multiarray``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        if self.proto == 0:
            self.write(pickle.STRING + repr(obj)[1:].encode("ascii") + b"\n")
        elif len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + len(obj).to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = lambda self, obj: self.save_py2_str(obj.encode("ascii"))  # Python 2 text was str too

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", None)
        module = module.replace("numpy._core", "numpy.core") if module else module
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def dump_py2(obj, f, protocol=2):
    Py2Pickler(f, protocol).dump(obj)


def dump_py3(obj, f, protocol=4):
    """A copy re-pickled under Python 3: str keys and class names (as ``pickle.load(encoding="latin1")`` gives)."""
    def text(v):
        return v.decode() if isinstance(v, bytes) else [text(i) for i in v] if isinstance(v, list) else v
    pickle.dump({k.decode(): text(v) for k, v in obj.items()}, f, protocol=protocol)


def write_cifar(base, name, n_train=40, n_test=10, k=5, seed=0, dump=dump_py2):
    """Write a tiny archive in the official format (``dump`` writes each dict); return (train CHW
    uint8, labels, test ..., names)."""
    folder, train_files, test_file, meta_file, label_key, names_key = CIFAR[name]
    rng = np.random.default_rng(seed)
    out = base / folder
    out.mkdir(parents=True)
    names = [f"class{i}".encode() for i in range(k)]
    meta = {names_key: names, b"num_vis": 3072}
    if name == "cifar100":
        meta[b"coarse_label_names"] = [b"super"]
    with open(out / meta_file, "wb") as f:
        dump(meta, f)

    def make(n):
        hwc = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        chw = hwc.transpose(0, 3, 1, 2)
        return chw, (np.arange(n) % k)[rng.permutation(n)]

    (x, y), (xt, yt) = make(n_train), make(n_test)
    chunks = np.array_split(np.arange(n_train), len(train_files))
    for file, (images, labels) in zip([*train_files, test_file], [*((x[c], y[c]) for c in chunks), (xt, yt)]):
        batch = {b"batch_label": file.encode(), label_key: [int(v) for v in labels],
                 b"data": images.reshape(len(images), 3072), b"filenames": [b"x.png"] * len(images)}
        if name == "cifar100":
            batch[b"coarse_labels"] = [0] * len(images)
        with open(out / file, "wb") as f:
            dump(batch, f)
    return x, y, xt, yt, tuple(n.decode() for n in names)

DUMPS = {  # how a CIFAR file may have been written: the Python 2 originals, and copies re-pickled by Python 3
    "py2-protocol2": lambda obj, f: dump_py2(obj, f, 2),  # the official files
    "py2-protocol0": lambda obj, f: dump_py2(obj, f, 0),
    "py3-bytes-keys-protocol2": lambda obj, f: pickle.dump(obj, f, protocol=2),  # bytes via _codecs.encode
    **{f"py3-str-keys-protocol{p}": (lambda obj, f, p=p: dump_py3(obj, f, p)) for p in (2, 3, 4, 5)},
}


@pytest.mark.parametrize("dump", list(DUMPS))
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reads_official_pickles_exactly(tmp_path, name, dump):
    x, y, xt, yt, names = write_cifar(tmp_path, name, dump=DUMPS[dump])
    s = load_splits(name, root=str(tmp_path), val_fraction=0.25, seed=1)
    assert s.class_names == names and s.num_classes == 5 and s.sample_shape == (3, 32, 32)
    assert s.augment == AUGMENT_OPS and (len(s.train), len(s.val), len(s.test)) == (30, 10, 10)
    assert keyed(raw(s, s.train), s.train.y) + keyed(raw(s, s.val), s.val.y) == keyed(x, y)
    assert np.array_equal(raw(s, s.test), xt) and s.test.y.tolist() == yt.tolist()  # official order kept
    assert sorted(s.val.y.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # stratified
    # Rows are channel-major; reading them as HWC would scramble pixels, so compare one pixel directly.
    assert raw(s, s.test)[3, 1, 5, 7] == xt[3, 1, 5, 7] == xt.reshape(-1, 3072)[3][1024 + 5 * 32 + 7]
    inner = load_splits(name, root=str(tmp_path / CIFAR[name][0]), val_fraction=0.25, seed=1)
    assert torch.equal(inner.test.x, s.test.x) and torch.equal(inner.train.y, s.train.y)
    small = DATASETS.get(name)(root=tmp_path, val_fraction=0.25, image_size=16, channels=1)
    assert small.train.x.shape == (30, 1, 16, 16) and small.sample_shape == (1, 16, 16)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_missing_files_say_what_is_expected(tmp_path, name):
    folder, train_files, test_file, *_ = CIFAR[name]
    with pytest.raises(DataError, match="root is required"):
        DATASETS.get(name)()
    with pytest.raises(DataError, match=f"{name}: no CIFAR-1.*{folder}/.*test") as info:
        DATASETS.get(name)(root=tmp_path)
    assert str(tmp_path) in str(info.value) and "python version" in str(info.value)
    write_cifar(tmp_path, name)
    (tmp_path / folder / train_files[-1]).unlink()
    with pytest.raises(DataError, match=f"lacks {train_files[-1]}"):
        DATASETS.get(name)(root=tmp_path)


def test_cifar_foreign_file_is_a_data_error(tmp_path):
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cannot unpickle .*test_batch"):
        DATASETS.get("cifar10")(root=tmp_path, val_fraction=0.25)


class Payload:
    """Unpickling this runs ``call(*args)``: what a crafted batch does to a plain ``pickle.load``."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def craft_batch(tmp_path, payload, file="data_batch_1"):
    """An official cifar10 tree whose ``file`` hides ``payload`` in its dict."""
    write_cifar(tmp_path, "cifar10")
    path = tmp_path / "cifar-10-batches-py" / file
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    batch[b"data"] = payload
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    return path


@pytest.mark.parametrize(("call", "refused"), [(os.system, "posix.system"), (open, "io.open"),
                                              (shutil.rmtree, "shutil.rmtree")])
def test_cifar_crafted_pickle_is_refused_before_it_runs(tmp_path, call, refused):
    marker = tmp_path / "pwned"
    args = {os.system: (f"touch {marker}",), open: (str(marker), "w"), shutil.rmtree: (str(marker),)}[call]
    if call is shutil.rmtree:
        marker.mkdir()  # what the payload would delete
    path = craft_batch(tmp_path, Payload(call, *args))
    with pytest.raises(DataError) as info:
        DATASETS.get("cifar10")(root=tmp_path, val_fraction=0.25)
    assert marker.exists() == (call is shutil.rmtree)  # nothing created, nothing deleted
    message = str(info.value)
    assert message == (f"cifar10: refused to unpickle {str(path)!r}: global {refused!r} is not allowed in a CIFAR "
                       "batch (only numpy arrays, lists, dicts, bytes, str, int); re-extract the official python "
                       "archive")
    if call is open:  # the file really is dangerous: a plain pickle.load runs it
        with open(path, "rb") as f:
            pickle.load(f, encoding="bytes")[b"data"].close()
        assert marker.exists()


@pytest.mark.parametrize(("body", "refused"), [
    # numpy's array globals used otherwise than numpy pickles arrays: calling ndarray(shape) or
    # _reconstruct with a size of the file's choosing would allocate it (1 TB here)
    (b"cnumpy\nndarray\n(I1000000000000\ntR", "a call of numpy.ndarray"),
    (b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I1000000000000\ntS'b'\ntR",
     "a call of numpy's _reconstruct with shape (1000000000000,)"),
    # _codecs.encode is admitted for latin-1 only (how Python 3 pickles bytes); other codecs are code paths
    (b"c_codecs\nencode\n(Vx\nVzlib_codec\ntR", "a call of _codecs.encode with the codec 'zlib_codec'"),
    (b"cbuiltins\neval\n(V1\ntR", "global 'builtins.eval'"),
    (b"c__builtin__\neval\n(S'1'\ntR", "global '__builtin__.eval'"),  # Python 2 spelling, not mapped
    (b"ccopyreg\n_reconstructor\n(cbuiltins\nobject\nNNtR", "global 'copyreg._reconstructor'"),
])
def test_cifar_refuses_every_other_use_of_globals(tmp_path, body, refused):
    write_cifar(tmp_path, "cifar10")
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(b"(dp0\nS'data'\n" + body + b"\ns.")  # protocol 0: {'data': <body>}
    with pytest.raises(DataError, match=r"^cifar10: refused to unpickle .*test_batch': " + re.escape(refused)):
        DATASETS.get("cifar10")(root=tmp_path, val_fraction=0.25)


@pytest.mark.parametrize(("change", "expected"), [
    ({b"data": "not pixels"}, r"holds data of shape \(\) \(<U10\) and labels of shape \(2,\) \(int64\)"),
    ({b"data": np.zeros((2, 3072), np.float32)}, r"holds data of shape \(2, 3072\) \(float32\)"),  # not cast
    ({b"data": np.full((2, 3072), 300)}, r"holds data of shape \(2, 3072\) \(int64\)"),  # out of uint8 range
    ({b"labels": [0, 1, 2]}, r"holds data of shape \(2, 3072\) \(uint8\) and labels of shape \(3,\)"),
    ({b"labels": [[0], [1]]}, r"holds data .* and labels of shape \(2, 1\)"),
    ({b"labels": [0, 9]}, r"has labels outside 0..4"),
    ({b"labels": {0: 1}}, r"holds data .* and labels of type dict"),
])
def test_cifar_wrong_contents_are_one_line_errors(tmp_path, change, expected):
    write_cifar(tmp_path, "cifar10")
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], **change}
    path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=r"^cifar10: '.*test_batch' " + expected) as info:
        DATASETS.get("cifar10")(root=tmp_path, val_fraction=0.25)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("content", "expected"), [
    (pickle.dumps([1, 2], protocol=2), r"batches.meta' holds a list, not the official dict format"),
    (pickle.dumps({b"label_names": 7}, protocol=2), r"'label_names' of type int; expected the official non-empty"),
    (pickle.dumps({b"other": 1}, protocol=2), r"has no 'label_names' entry"),
    (b"\x80\x02}q\x00(U\x04data", r"cannot unpickle .*batches.meta' \(EOFError"),  # truncated
])
def test_cifar_foreign_meta_is_a_data_error(tmp_path, content, expected):
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(content)
    with pytest.raises(DataError, match=expected):
        DATASETS.get("cifar10")(root=tmp_path, val_fraction=0.25)

WNIDS = ["n01443537", "n02123045", "n09999999"]


def write_tinyimagenet(base, per_class=6):
    """Official layout; class k's images are solid colours bright in channel k, so labels are checkable."""
    root = base / "tiny-imagenet-200"
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (root / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn02123045\ttabby, tabby cat\n")

    def save(path, k, shade):
        colour = [40, 40, 40]
        colour[k] = 200 + shade
        Image.new("RGB", (64, 64), tuple(colour)).save(path, "JPEG")  # the official size

    for k, wnid in enumerate(WNIDS):
        (root / "train" / wnid / "images").mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(per_class):
            save(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", k, i)
    val_labels = [2, 0, 1, 1, 2, 0]
    lines = []
    for j, k in enumerate(val_labels):
        save(root / "val" / "images" / f"val_{j}.JPEG", k, j)
        lines.append(f"val_{j}.JPEG\t{WNIDS[k]}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root, val_labels


def test_tinyimagenet_official_layout(tmp_path):
    root, val_labels = write_tinyimagenet(tmp_path)
    s = load_splits("tinyimagenet", root=str(tmp_path), image_size=8, val_fraction=0.2)
    assert (len(s.train), len(s.val), len(s.test)) == (14, 4, 6) and s.test.x.shape == (6, 3, 8, 8)
    assert s.test.y.tolist() == val_labels  # official val (labels via val_annotations.txt) is the test split
    assert s.class_names == ("goldfish", "tabby", "n09999999") and s.augment == AUGMENT_OPS
    for split in (s.train, s.val, s.test):
        brightest = raw(s, split).mean((2, 3)).argmax(1)  # class k is bright in channel k
        assert brightest.tolist() == split.y.tolist()
    assert np.bincount(s.val.y.numpy(), minlength=3).min() >= 1
    assert DATASETS.get("tinyimagenet")(root=root, val_fraction=0.2).sample_shape == (3, 64, 64)  # default


def test_tinyimagenet_bad_layouts(tmp_path):
    root, _ = write_tinyimagenet(tmp_path)
    lines = (root / "val" / "val_annotations.txt").read_text().replace(WNIDS[2], "n00000000")
    (root / "val" / "val_annotations.txt").write_text(lines)
    with pytest.raises(DataError, match="'n00000000', which is not in wnids.txt"):
        DATASETS.get("tinyimagenet")(root=root)
    (root / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DataError, match="lacks val/val_annotations.txt") as info:
        DATASETS.get("tinyimagenet")(root=tmp_path)
    assert "tiny-imagenet-200/wnids.txt" in str(info.value)


def png_header_only(width, height):
    """A PNG whose header claims ``width`` × ``height`` RGB pixels with the pixel data of at most
    8 rows (compressed zeros, under a kilobyte): a naive decoder would allocate ``3·width·height`` bytes."""
    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes((1 + 3 * width) * min(height, 8))))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize(("width", "height", "expected"), [
    (20000, 20000, r"is too large to be a Tiny ImageNet image \(Image size \(400000000 pixels\) exceeds limit"),
    (10000, 10000, r"is too large to be a Tiny ImageNet image \(Image size \(100000000 pixels\) exceeds limit"),
    (5000, 4000, r"is too large to be a Tiny ImageNet image \(5000×4000 pixels; at most 16,777,216 pixels"),
])
def test_tinyimagenet_refuses_oversized_images_from_the_header(tmp_path, width, height, expected):
    """400 MP is past PIL's own bomb limit (an error), 100 MP between its warning and its error,
    20 MP under both but past ours: each is refused before any pixel is decoded."""
    root, _ = write_tinyimagenet(tmp_path)
    bomb = root / "train" / WNIDS[1] / "images" / f"{WNIDS[1]}_3.JPEG"
    bomb.write_bytes(png_header_only(width, height))  # a PNG named .JPEG: PIL goes by content
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would be a second line on stderr
        with pytest.raises(DataError, match=rf"^tinyimagenet: image {re.escape(repr(str(bomb)))} " + expected) as info:
            DATASETS.get("tinyimagenet")(root=root, val_fraction=0.2)
    assert "\n" not in str(info.value) and str(info.value).endswith("replace it with the official file")


def test_tinyimagenet_png_header_is_what_pil_reads():
    """The crafted header is a real PNG header: PIL reports its claimed size, and 8×8 decodes."""
    from PIL import Image

    with Image.open(io.BytesIO(png_header_only(8, 8))) as im:
        assert im.size == (8, 8) and np.asarray(im.convert("RGB")).shape == (8, 8, 3)
    with Image.open(io.BytesIO(png_header_only(5000, 4000))) as im:
        assert im.size == (5000, 4000)


@pytest.mark.parametrize(("damage", "expected"), [
    ("garbage", r"cannot read image {} \(UnidentifiedImageError: cannot identify image file"),
    ("truncated", r"cannot read image {} \(OSError: image file is truncated"),
    ("empty", r"cannot read image {} \(UnidentifiedImageError: cannot identify image file"),
    ("directory", r"image {} is a directory, not a regular file; replace it with the official file$"),
])
def test_tinyimagenet_undecodable_images_are_data_errors(tmp_path, damage, expected):
    root, _ = write_tinyimagenet(tmp_path)
    path = root / "val" / "images" / "val_2.JPEG"
    if damage == "garbage":
        path.write_bytes(b"this is not a JPEG at all" * 10)
    elif damage == "truncated":
        Image.effect_noise((64, 64), 60).convert("RGB").save(path, "JPEG", quality=95)
        path.write_bytes(path.read_bytes()[:1500])  # header intact, entropy-coded data cut short
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
        path.mkdir()
    with pytest.raises(DataError, match="^tinyimagenet: " + expected.format(re.escape(repr(str(path))))):
        DATASETS.get("tinyimagenet")(root=root, val_fraction=0.2)


@pytest.mark.parametrize("file", ["wnids.txt", "val/val_annotations.txt", "words.txt"])
def test_tinyimagenet_text_files_that_are_not_utf8(tmp_path, file):
    root, _ = write_tinyimagenet(tmp_path)
    (root / file).write_bytes(b"\xff\xfe\x00n0144\x80")
    with pytest.raises(DataError, match=rf"^tinyimagenet: cannot read '.*{file}' as UTF-8 text \(UnicodeDecodeError"):
        DATASETS.get("tinyimagenet")(root=root, val_fraction=0.2)


def test_synthetic_is_seeded_balanced_and_learnable():
    make = DATASETS.get("synthetic")
    a, b, c = make(seed=5), make(seed=5), make(seed=6)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train.x[:10], c.train.x[:10])
    assert (len(a.train), len(a.val), len(a.test)) == (650, 150, 200) and a.sample_shape == (3, 16, 16)
    assert np.bincount(a.test.y.numpy()).tolist() == [20] * 10
    centroids = torch.stack([a.train.x[a.train.y == k].mean(0) for k in range(10)]).flatten(1)
    acc = (torch.cdist(a.test.x.flatten(1), centroids).argmin(1) == a.test.y).float().mean().item()
    assert 0.5 < acc < 0.98  # far above chance (0.1), but not solved by a nearest-mean rule
    small = make(num_samples=200, num_classes=4, image_size=12, channels=1)
    assert small.train.x.shape == (130, 1, 12, 12) and small.class_names == ("class_0", "class_1", "class_2", "class_3")
    with pytest.raises(DataError, match="synthetic: cannot split 20 samples of 10 classes"):
        make(num_samples=20)


@pytest.fixture()
def indexed():
    """Split whose images carry their own index, so batches can be traced back."""
    n = 103
    return Split(torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).clone(), torch.arange(n))


def test_batches_cover_every_sample_once(indexed):
    got = list(batches(indexed, 25, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in got] == [25, 25, 25, 25, 3]
    order = torch.cat([y for _, y in got])
    assert sorted(order.tolist()) == list(range(103)) and order.tolist() != list(range(103))
    assert all(torch.equal(x[:, 0, 2, 3], y.float()) for x, y in got)  # images travel with their labels
    plain = torch.cat([y for _, y in batches(indexed, 25, shuffle=False)])
    assert plain.tolist() == list(range(103))


def test_batches_reproducible_from_the_generator():
    s = load_splits("digits", image_size=8)

    def epoch(seed, ops=AUGMENT_OPS):
        return list(batches(s.train, 64, shuffle=True, augment=ops, generator=torch.Generator().manual_seed(seed)))

    a, b, c = epoch(7), epoch(7), epoch(8)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not torch.equal(a[0][1], c[0][1]) and not torch.equal(a[0][0], c[0][0])
    plain = epoch(7, ())  # the order is drawn before any augmentation: same order, untouched images
    for (xa, ya), (xp, yp) in zip(a, plain):
        assert torch.equal(ya, yp) and xa.shape == xp.shape == (len(ya), 3, 8, 8)
        assert (xa - xp).abs().flatten(1).amax(1).min() > 0  # every image changed


def test_flip_mirrors_about_half_the_samples():
    x = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out = augment_batch(x, ("flip",), torch.Generator().manual_seed(1))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == torch.flip(x, dims=[-1])).flatten(1).all(1)
    assert bool((same ^ mirrored).all())  # each sample is exactly one of the two
    assert 16 <= int(mirrored.sum()) <= 48
    assert torch.equal(x, torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(0)))  # input untouched


def test_crop_is_a_zero_filled_shift_of_at_most_pad():
    x = torch.randn(32, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    out = augment_batch(x, ("crop",), torch.Generator().manual_seed(2))
    pad, shifts = max(1, round(4 * 16 / 32)), set()
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    for i in range(len(x)):
        found = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 if torch.equal(out[i], padded[i, :, dy : dy + 16, dx : dx + 16])]
        assert len(found) == 1
        shifts.add(found[0])
    assert len(shifts) > 5  # per-sample offsets, not one for the batch


def test_rotate_turns_each_sample_by_its_own_angle_within_15_degrees():
    bar = torch.zeros(64, 1, 33, 33)
    bar[:, :, 16, 6:27] = 1.0  # a horizontal bar, away from the borders
    out = augment_batch(bar, ("rotate",), torch.Generator().manual_seed(3))
    ys, xs = torch.meshgrid(torch.arange(33.0), torch.arange(33.0), indexing="ij")
    w = out[:, 0] / out[:, 0].sum((1, 2), keepdim=True)
    cy, cx = (w * ys).sum((1, 2), keepdim=True), (w * xs).sum((1, 2), keepdim=True)
    dy, dx = ys - cy, xs - cx
    cyy, cxx, cxy = (w * dy**2).sum((1, 2)), (w * dx**2).sum((1, 2)), (w * dy * dx).sum((1, 2))
    angles = torch.rad2deg(0.5 * torch.atan2(2 * cxy, cxx - cyy))
    assert angles.abs().max() <= 15.5 and angles.max() > 9 and angles.min() < -9
    assert len(set(angles.round().tolist())) > 10
    assert torch.allclose(out.sum((1, 2, 3)), bar.sum((1, 2, 3)), rtol=0.05)  # nothing cut off: a rotation


def test_bad_batching_options_raise_at_call_time():
    s = Split(torch.zeros(4, 1, 4, 4), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(DataError, match="batch_size must be an integer >= 1, got 0"):
        batches(s, 0, shuffle=False)
    with pytest.raises(DataError, match="augment has unknown op 'blur'; valid choices: crop, flip, rotate"):
        batches(s, 2, shuffle=True, augment=("flip", "blur"))
    with pytest.raises(DataError, match="ops has unknown op 'jitter'"):
        augment_batch(s.x, ("jitter",), None)
    with pytest.raises(DataError, match=r"ops has unknown op 'rotat' \(did you mean 'rotate'\?\); valid choices"):
        augment_batch(s.x, ("rotat",), None)
    with pytest.raises(DataError, match="Split needs x of shape"):
        Split(torch.zeros(3, 1, 4, 4), torch.zeros(2))


def test_augmentation_is_fast_single_threaded():
    x = torch.randn(64, 3, 16, 16)
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        augment_batch(x, AUGMENT_OPS, gen)  # warm-up
        times = []
        for _ in range(30):
            start = time.perf_counter()
            augment_batch(x, AUGMENT_OPS, gen)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    assert statistics.median(times) < 5e-3, f"median {statistics.median(times) * 1e3:.2f} ms"
    assert not math.isnan(float(augment_batch(x, AUGMENT_OPS, gen).sum()))


def test_a_dataset_registered_again_after_an_edit_is_loaded_again(fresh_names):
    """A worker caches loaded splits; a plugin dataset imported again (edited) is a new loader,
    so its next load runs the edit instead of returning the first version's splits."""
    from compressflow.data.load import load_dataset
    from compressflow.registries import DATASETS

    calls = []

    def version(tag):
        def splits(*, seed: int = 0):
            calls.append(tag)
            return tag
        return splits

    DATASETS.register(version("first"), name="edited_ds")
    assert [load_dataset("edited_ds", "classification", {"seed": 0}) for _ in range(2)] == ["first", "first"]
    assert calls == ["first"]  # cached
    assert DATASETS.forget(__name__) == ["edited_ds"]  # what re-importing its plugin does first
    DATASETS.register(version("edited"), name="edited_ds")
    assert load_dataset("edited_ds", "classification", {"seed": 0}) == "edited" and calls == ["first", "edited"]
