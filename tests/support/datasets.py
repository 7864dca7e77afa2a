"""Tiny official-format dataset folders, written by the tests that read them (unit tests and the
bad-input matrix's setups)."""

from __future__ import annotations

import numpy as np
from PIL import Image

#: the images of :func:`write_voc`: id, width, height and objects (class, xmin, ymin, xmax, ymax,
#: difficult), VOC's 1-based inclusive pixel boxes
IMAGES = [
    ("000001", 40, 30, [("dog", 1, 1, 20, 15, 0), ("person", 10, 5, 40, 30, 1)]),
    ("000002", 32, 32, [("tvmonitor", 5, 6, 7, 8, 0)]),
    ("000003", 24, 36, [("aeroplane", 2, 3, 24, 36, 0), ("cat", 4, 4, 10, 10, 0), ("dog", 1, 1, 1, 1, 1)]),
]


def voc_xml(width, height, objects, extra=""):
    """An annotation file's text: the image size and its objects (``extra`` goes before the root)."""
    objs = "".join(f"<object><name>{c}</name><pose>Left</pose><truncated>0</truncated><difficult>{d}</difficult>"
                   f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
                   for c, x1, y1, x2, y2, d in objects)
    return (f"{extra}<annotation><folder>VOC2007</folder><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size><segmented>0</segmented>{objs}</annotation>")


def write_voc(root, splits=(("train", ["000001", "000002"]), ("val", ["000003"])), test=None):
    """A VOCdevkit/VOC2007 folder with the IMAGES, their XML and the split lists."""
    base = root / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, w, h, objects in IMAGES:
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(base / "JPEGImages" / f"{name}.jpg")
        (base / "Annotations" / f"{name}.xml").write_text(voc_xml(w, h, objects))
    for split, ids in (*splits, *((("test", test),) if test else ())):
        (base / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return base

#: a DOCTYPE declaring nested entities (the "billion laughs" bomb, three levels here)
BOMB = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;">]>')
