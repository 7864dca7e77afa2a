"""Dataset files that are not regular files (a FIFO, a link to ``/dev/zero``) or that would
decode to more memory than a dataset may take: every reader refuses them at once, with one
line naming the file, instead of hanging or filling memory."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from compressflow.data import cifar, voc
from compressflow.data import tinyimagenet as tin
from compressflow.errors import DataError
from compressflow.registries import DATASETS
from tests.support.datasets import voc_xml, write_voc
from tests.support.special_files import SPECIAL, make_special, promptly
from tests.unit.data.test_data import WNIDS, write_cifar, write_tinyimagenet


def refused(dataset, root, path, kind, what="file", **options):
    """Load ``dataset`` from ``root`` (under a timeout) and check its one-line refusal of ``path``."""
    with pytest.raises(DataError) as info:
        promptly(lambda: DATASETS.get(dataset)(root=root, **options))
    message = str(info.value)
    assert "\n" not in message
    assert message == f"{dataset}: {what} {str(path)!r} is {SPECIAL[kind]}, not a regular file; " \
                      "replace it with the official file"


@pytest.mark.parametrize("kind", list(SPECIAL))
@pytest.mark.parametrize(("file", "what"), [
    ("wnids.txt", "file"), ("words.txt", "file"), ("val/val_annotations.txt", "file"),
    (f"train/{WNIDS[1]}/images/{WNIDS[1]}_2.JPEG", "image"), ("val/images/val_4.JPEG", "image"),
])
def test_tinyimagenet_special_files_are_refused(tmp_path, file, what, kind):
    root, _ = write_tinyimagenet(tmp_path, per_class=3)
    refused("tinyimagenet", root, make_special(root / file, kind), kind, what, val_fraction=0.34)


@pytest.mark.parametrize("kind", list(SPECIAL))
@pytest.mark.parametrize(("file", "what"), [
    ("Annotations/000002.xml", "annotation"), ("JPEGImages/000003.jpg", "image"), ("ImageSets/Main/val.txt", "file"),
])
def test_voc_special_files_are_refused(tmp_path, file, what, kind):
    base = write_voc(tmp_path)
    refused("voc", tmp_path, make_special(base / file, kind), kind, what)


@pytest.mark.parametrize("kind", list(SPECIAL))
@pytest.mark.parametrize("file", ["data_batch_3", "batches.meta"])
def test_cifar_special_files_are_refused(tmp_path, file, kind):
    write_cifar(tmp_path, "cifar10", n_train=10, n_test=5)
    path = tmp_path / "cifar-10-batches-py" / file
    refused("cifar10", tmp_path, make_special(path, kind), kind, val_fraction=0.2)  # found by the client's check
    with pytest.raises(DataError, match=rf"^cifar10: file {re.escape(repr(str(path)))} is {SPECIAL[kind]}, not a "):
        promptly(lambda: cifar._read_pickle("cifar10", path, 2**20, "data"))  # and by the reader on the descriptor


def test_cifar_batch_larger_than_its_official_size_is_refused_before_reading(tmp_path):
    write_cifar(tmp_path, "cifar10", n_train=10, n_test=5)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    with open(batch, "r+b") as f:
        f.truncate(2**40)  # a sparse terabyte: nothing on disk, and nothing may be read
    with pytest.raises(DataError, match=rf"^cifar10: file {re.escape(repr(str(batch)))} is larger than its "
                                        rf"limit of 34048576 bytes \(1099511627776 bytes\); replace it"):
        promptly(lambda: DATASETS.get("cifar10")(root=tmp_path, val_fraction=0.2))


def png(path, width, height):
    """A real PNG of ``width`` × ``height`` black pixels (compresses to a few kilobytes)."""
    Image.new("RGB", (width, height)).save(path, "PNG")


def test_tinyimagenet_images_of_another_size_than_the_first_are_refused_before_decoding(tmp_path):
    """The issue's case: the first image at the per-image limit, the others small. The set is not
    allocated at the first one's size: 66 such images are over the budget, 12 are within it and
    the first small image is refused."""
    root, _ = write_tinyimagenet(tmp_path, per_class=20)
    first = root / "train" / WNIDS[0] / "images" / f"{WNIDS[0]}_0.JPEG"
    png(first, 4096, 4096)  # exactly MAX_IMAGE_PIXELS: allowed on its own
    with pytest.raises(DataError, match=rf"^tinyimagenet: decoding 66 images of 4096×4096 pixels \(the size of "
                                        rf"{re.escape(repr(str(first)))}\) needs 3,321,888,768 bytes, more than the "
                                        r"2,147,483,648 this dataset may take; remove the files that are not part"):
        promptly(lambda: DATASETS.get("tinyimagenet")(root=root, val_fraction=0.2))
    for name in sorted((root / "train").glob("*/images/*_[2-9]*.JPEG")) + sorted((root / "train").glob("*/images/*_1?.JPEG")):
        name.unlink()  # 2 per class left, 12 images in all
    second = root / "train" / WNIDS[0] / "images" / f"{WNIDS[0]}_1.JPEG"
    with pytest.raises(DataError) as info:
        promptly(lambda: DATASETS.get("tinyimagenet")(root=root, val_fraction=0.5))
    assert str(info.value) == (f"tinyimagenet: image {str(second)!r} is 64×64 pixels, but {str(first)!r} is "
                               "4096×4096: all images of the set must have one size (the official ones are 64×64); "
                               "replace it with the official file")


def test_tinyimagenet_decoded_total_is_bounded_before_allocation(tmp_path, monkeypatch):
    root, _ = write_tinyimagenet(tmp_path, per_class=2)  # 6 train + 6 val images of 64×64×3 = 12,288 bytes
    monkeypatch.setattr(tin, "MAX_DECODED_BYTES", 11 * 64 * 64 * 3)
    first = root / "train" / WNIDS[0] / "images" / f"{WNIDS[0]}_0.JPEG"
    with pytest.raises(DataError, match=rf"^tinyimagenet: decoding 12 images of 64×64 pixels \(the size of "
                                        rf"{re.escape(repr(str(first)))}\) needs 147,456 bytes, more than the "
                                        r"135,168 this dataset may take; remove the files"):
        DATASETS.get("tinyimagenet")(root=root, val_fraction=0.5)
    monkeypatch.setattr(tin, "MAX_DECODED_BYTES", 12 * 64 * 64 * 3)  # exactly the set: read
    assert len(DATASETS.get("tinyimagenet")(root=root, val_fraction=0.5).test) == 6


@pytest.mark.parametrize("file, line", [("wnids.txt", "../../../etc\n"),
                                        ("val/val_annotations.txt", "../../train/x.JPEG\tn01443537\n")])
def test_tinyimagenet_names_that_lead_out_of_the_folder_are_refused(tmp_path, file, line):
    """Class ids and image names become paths under the dataset folder: one with a '/' or '..'
    could read files elsewhere, so it is refused, naming the list it came from."""
    root, _ = write_tinyimagenet(tmp_path, per_class=2)
    with open(root / file, "a") as fh:
        fh.write(line)
    bad = line.split("\t")[0].strip()
    with pytest.raises(DataError, match=rf"^tinyimagenet: {re.escape(file)} names {re.escape(repr(bad))}, which is "
                                        r"not a plain file name"):
        DATASETS.get("tinyimagenet")(root=root, val_fraction=0.5)


def test_tinyimagenet_grayscale_images_are_converted(tmp_path):
    """A few official JPEGs are grayscale: read as RGB with equal channels, not refused."""
    root, _ = write_tinyimagenet(tmp_path, per_class=2)
    Image.new("L", (64, 64), 77).save(root / "val" / "images" / "val_1.JPEG", "JPEG")
    pixels = tin._read_images([root / "val" / "images" / f"val_{j}.JPEG" for j in range(3)])
    assert pixels.shape == (3, 3, 64, 64) and (pixels[1] == 77).all()


def test_voc_decoded_total_is_bounded_from_the_annotations(tmp_path, monkeypatch):
    write_voc(tmp_path)  # 40×30 + 32×32 + 24×36 pixels, 3 bytes each
    native = 3 * (40 * 30 + 32 * 32 + 24 * 36)
    monkeypatch.setattr(voc, "MAX_DECODED_BYTES", native - 1)
    with pytest.raises(DataError, match=rf"^voc: decoding 3 images needs {native:,} bytes, more than the {native - 1:,} "):
        DATASETS.get("voc")(root=tmp_path)
    assert len(DATASETS.get("voc")(root=tmp_path, image_size=16).test) == 1  # 3 × 16×16×3: within it
    monkeypatch.setattr(voc, "MAX_DECODED_BYTES", 3 * 16 * 16 * 3 - 1)
    with pytest.raises(DataError, match=r"^voc: decoding 3 images at 16×16 needs "):
        DATASETS.get("voc")(root=tmp_path, image_size=16)


def test_voc_annotation_claiming_a_huge_image_is_refused_before_its_image_is_opened(tmp_path):
    base = write_voc(tmp_path)
    path = base / "Annotations" / "000003.xml"
    path.write_text(voc_xml(5000, 4000, []))
    make_special(base / "JPEGImages" / "000003.jpg", "fifo")  # never opened
    with pytest.raises(DataError, match=rf"^voc: annotation {re.escape(repr(str(path)))} gives an image size of "
                                        r"5000×4000, more than the 16,777,216 pixels decoded; replace it"):
        promptly(lambda: DATASETS.get("voc")(root=tmp_path))


def test_voc_reads_its_images_exactly_through_the_checked_descriptor(tmp_path):
    base = write_voc(tmp_path)
    s = DATASETS.get("voc")(root=tmp_path)
    jpeg = np.asarray(Image.open(base / "JPEGImages" / "000003.jpg").convert("RGB"))
    assert np.array_equal(s.test.images[0].permute(1, 2, 0).numpy(), jpeg)
