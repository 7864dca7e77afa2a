"""Detection data: ``shapes`` generated from the seed, official-layout PASCAL VOC files written
here (tiny JPEGs and XML), the loader and batching."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from compressflow.data import load_splits
from compressflow.data.detection import detection_batches, load_detection_splits
from compressflow.data.shapes import SHAPE_CLASSES, _draw
from compressflow.data.voc import MAX_XML_BYTES, VOC_CLASSES
from compressflow.errors import DataError, InputError
from compressflow.registries import DATASETS, UnknownNameError
from tests.support.datasets import BOMB, voc_xml, write_voc


def test_shapes_is_deterministic_per_seed():
    a, b, c = _draw(3, 32, 6, 3), _draw(3, 32, 6, 3), _draw(4, 32, 6, 3)
    assert np.array_equal(a.images, b.images) and all(np.array_equal(x, y) for x, y in zip(a.boxes, b.boxes))
    assert not np.array_equal(a.images, c.images)
    s1, s2 = (DATASETS.get("shapes")(image_size=32, num_images=10, seed=3) for _ in range(2))
    assert all(torch.equal(x, y) for x, y in zip(s1.test.images, s2.test.images))


def test_shapes_boxes_are_tight_and_everything_outside_them_is_background():
    drawn = _draw(0, 64, 40, 3)
    for image, background, boxes in zip(drawn.images, drawn.backgrounds, drawn.boxes):
        drawn_px = (image != background).any(axis=-1)  # pixels an object was drawn on
        inside = np.zeros_like(drawn_px)
        for x1, y1, x2, y2 in boxes.astype(int):
            inside[y1:y2, x1:x2] = True
            part = drawn_px[y1:y2, x1:x2]
            # tight: the object reaches each of the box's four edges
            assert part[0].any() and part[-1].any() and part[:, 0].any() and part[:, -1].any()
        assert not drawn_px[~inside].any()  # outside every box: the background, untouched
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all()


def test_shapes_classes_balanced_and_counts_bounded():
    drawn = _draw(1, 64, 150, 3)
    counts = Counter(np.concatenate(drawn.labels).tolist())
    assert set(counts) == {1, 2, 3}
    assert max(counts.values()) - min(counts.values()) <= 0.05 * sum(counts.values())
    per_image = [len(x) for x in drawn.labels]
    assert min(per_image) >= 1 and max(per_image) <= 3


def test_shapes_splits_and_targets_follow_torchvision():
    s = load_detection_splits("shapes", image_size=32, num_images=20, val_fraction=0.15, test_fraction=0.2)
    assert (len(s.train), len(s.val), len(s.test)) == (13, 3, 4)
    assert s.class_names == SHAPE_CLASSES and s.num_classes == 3 and s.image_size == 32
    t = s.train.targets[0]
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64 and t["difficult"].dtype == torch.bool
    assert s.train.images[0].shape == (3, 32, 32) and s.train.images[0].dtype == torch.uint8
    assert load_detection_splits("shapes", image_size=32, num_images=20) is s  # cached per process
    assert len(set(s.train.ids + s.val.ids + s.test.ids)) == 20


def test_flipped_batches_mirror_the_boxes():
    s = load_detection_splits("shapes", image_size=32, num_images=10)
    plain = list(detection_batches(s.train, 3))
    flipped = list(detection_batches(s.train, 3, flip=True, generator=torch.Generator().manual_seed(0)))
    seen = 0
    for (xs, ts), (fx, ft) in zip(plain, flipped):
        for x, t, y, u in zip(xs, ts, fx, ft):
            if not torch.equal(x, y):
                seen += 1
                assert torch.equal(x.flip(-1), y)
                assert torch.equal(u["boxes"][:, [0, 2]], 32 - t["boxes"][:, [2, 0]])
    assert 0 < seen < len(s.train) and float(plain[0][0][0].max()) <= 1.0


@pytest.mark.parametrize("options, match", [
    ({"image_size": 8}, "shapes: image_size must be an integer >= 24, got 8"),
    ({"num_images": 4, "val_fraction": 0.5, "test_fraction": 0.5}, "leave no training image"),
    ({"val_fraction": 1.5}, r"shapes: val_fraction must be a number in \[0, 1\), got 1.5"),
])
def test_shapes_bad_options(options, match):
    with pytest.raises(DataError, match=match):
        DATASETS.get("shapes")(**options)


def test_detection_datasets_are_dataset_entries_of_their_own_task():
    assert DATASETS.list(task="detection") == ["shapes", "voc"]
    assert {"shapes", "voc"}.isdisjoint(DATASETS.list(task="classification"))
    with pytest.raises(UnknownNameError, match="valid choices: shapes, voc$"):
        load_detection_splits("coco")
    with pytest.raises(UnknownNameError, match="^dataset 'digits' has task 'classification'; valid choices here: shapes, voc$"):
        load_detection_splits("digits")
    with pytest.raises(UnknownNameError, match="^dataset 'shapes' has task 'detection'; valid choices here: cifar10, "):
        load_splits("shapes")
    assert len(load_splits("digits").train) > 0  # classification loading untouched


def test_voc_reads_boxes_labels_and_difficult_flags_exactly(tmp_path):
    write_voc(tmp_path, test=["000003"], splits=(("train", ["000001"]), ("val", ["000002"])))
    s = DATASETS.get("voc")(root=str(tmp_path))
    assert s.class_names == VOC_CLASSES and s.num_classes == 20 and s.name == "voc2007"
    assert (s.train.ids, s.val.ids, s.test.ids) == (("000001",), ("000002",), ("000003",))
    t = s.train.targets[0]
    # x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax; dog = 12, person = 15 (1-based class order)
    assert t["boxes"].tolist() == [[0, 0, 20, 15], [9, 4, 40, 30]]
    assert t["labels"].tolist() == [12, 15] and t["difficult"].tolist() == [False, True]
    assert s.val.targets[0]["boxes"].tolist() == [[4, 5, 7, 8]] and s.val.targets[0]["labels"].tolist() == [20]
    assert s.test.targets[0]["labels"].tolist() == [1, 8, 12] and s.test.targets[0]["difficult"].tolist() == [0, 0, 1]
    assert s.train.images[0].shape == (3, 30, 40) and s.test.images[0].shape == (3, 36, 24)
    jpeg = np.asarray(Image.open(tmp_path / "VOCdevkit/VOC2007/JPEGImages/000002.jpg").convert("RGB"))
    assert np.array_equal(s.val.images[0].permute(1, 2, 0).numpy(), jpeg)
    # the year folder itself as root, and a resize that scales the boxes
    small = DATASETS.get("voc")(root=tmp_path / "VOCdevkit" / "VOC2007", image_size=20)
    assert small.train.images[0].shape == (3, 20, 20) and small.image_size == 20
    assert small.train.targets[0]["boxes"][1].tolist() == pytest.approx([9 / 2, 4 * 2 / 3, 20, 20])


def test_voc_without_test_list_tests_on_val_and_carves_val_from_train(tmp_path):
    write_voc(tmp_path)
    s = load_detection_splits("voc", root=tmp_path, val_fraction=0.5, seed=0)
    assert s.test.ids == ("000003",) and sorted(s.train.ids + s.val.ids) == ["000001", "000002"]
    assert len(s.train) == len(s.val) == 1


def _break(tmp_path, text):
    base = write_voc(tmp_path)
    (base / "Annotations" / "000002.xml").write_text(text)
    return base / "Annotations" / "000002.xml"


@pytest.mark.parametrize("text, match", [
    (voc_xml(32, 32, [("tvmonitor", 5, 6, 7, 8, 0)], extra=BOMB).replace("VOC2007", "&lol3;"),
     "declares a DTD, an entity or an external reference, which are refused"),
    ('<?xml version="1.0"?><!DOCTYPE annotation SYSTEM "file:///etc/passwd">' + voc_xml(32, 32, []),
     "declares a DTD"),
    (voc_xml(32, 32, [("tvmonitor", 5, 6, 40, 8, 0)]), r"box xmin=5, ymin=6, xmax=40, ymax=8 outside its 32×32 image"),
    (voc_xml(32, 32, [("tvmonitor", 0, 6, 7, 8, 0)]), "outside its 32×32 image"),
    (voc_xml(32, 32, [("unicorn", 5, 6, 7, 8, 0)]), "unknown class 'unicorn'; valid classes: aeroplane, bicycle"),
    (voc_xml(32, 32, [("dog", 5, 6, 7, 8, 2)]), "difficult '2'; expected 0 or 1"),
    (voc_xml(32, 32, [("dog", 5, "six", 7, 8, 0)]), "object 0/bndbox/ymin 'six'; expected a number"),
    ("<annotation><size>", "is not well-formed XML"),
    ("<html/>", "has the root element <html>, not <annotation>"),
    (voc_xml(32, 32, []) + " " * MAX_XML_BYTES, r"is larger than its limit of 1048576 bytes \(1048\d{3} bytes\)"),
    (voc_xml(30, 32, []), "is 32×32 but its annotation says 30×32"),
])
def test_voc_bad_annotations_are_one_line_errors_naming_the_file(tmp_path, text, match):
    path = _break(tmp_path, text)
    with pytest.raises(InputError, match=match) as info:
        DATASETS.get("voc")(root=tmp_path)
    assert isinstance(info.value, DataError) and "\n" not in str(info.value)
    assert str(path if "annotation says" not in match else path.parent.parent / "JPEGImages" / "000002.jpg") \
        in str(info.value)


def test_voc_missing_files(tmp_path):
    with pytest.raises(DataError, match="voc: root is required"):
        DATASETS.get("voc")()
    with pytest.raises(DataError, match="no PASCAL VOC 2007 folder under"):
        DATASETS.get("voc")(root=tmp_path)
    base = write_voc(tmp_path)
    (base / "JPEGImages" / "000002.jpg").unlink()
    with pytest.raises(DataError, match=r"000002.jpg' is missing"):
        DATASETS.get("voc")(root=tmp_path)
    (base / "Annotations" / "000001.xml").unlink()
    with pytest.raises(DataError, match=r"000001.xml' cannot be read \(FileNotFoundError"):
        DATASETS.get("voc")(root=tmp_path)
    (base / "ImageSets" / "Main" / "train.txt").write_text("../../secret\n")
    with pytest.raises(DataError, match="lists the image id '../../secret', which is not a file name"):
        DATASETS.get("voc")(root=tmp_path)
    with pytest.raises(DataError, match="year '2010' is not a VOC detection year"):
        DATASETS.get("voc")(root=tmp_path, year="2010")
