"""Object detectors for detection KD: torchvision's SSD with a VGG16 backbone (the teacher,
SSD300-VGG16's layout) and SSDlite with a MobileNetV3-Large backbone (the student,
SSDlite320-MobileNetV3's), built from scratch (no weights are downloaded) at a size a CPU
trains: a small square ``image_size`` and a ``width`` multiplier on the backbone's channels.

What differs from torchvision's fixed-size builders (``ssd300_vgg16``,
``ssdlite320_mobilenet_v3_large``), and why:

* the input side is ``image_size`` (default 96), not 300 / 320, and the default boxes are
  laid out relative to each feature map (no pixel ``steps``), so they fit any side;
* ``ssd_vgg16`` narrows VGG16's channels by ``width`` and adds batch norm (trained from scratch
  in minutes, plain VGG does not converge), and its extra layers are stride-2 3×3 convolutions
  with padding, so six feature maps exist down to 1×1 at small sides (SSD300's unpadded conv10_2 /
  conv11_2 need a 300-pixel input);
* ``ssdlite_mobilenet_v3`` passes ``width`` to torchvision's ``mobilenet_v3_large(width_mult=...)``
  and to the SSDlite extra layers, with the reduced tail torchvision uses without weights.

Both are :class:`torchvision.models.detection.SSD` models: ``model(images, targets)`` in train
mode returns ``{"bbox_regression", "classification"}`` losses, in eval mode one
``{"boxes", "scores", "labels"}`` dict per image. ``num_classes`` counts the foreground classes;
the models have ``num_classes + 1`` outputs, 0 being background, as torchvision expects.

Examples
--------
>>> import torch
>>> model = build_detector("ssdlite_mobilenet_v3", num_classes=3, image_size=64, width=0.25).eval()
>>> out = model([torch.rand(3, 64, 64)])
>>> sorted(out[0])
['boxes', 'labels', 'scores']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from compressflow.registries import MODELS

if TYPE_CHECKING:
    from torchvision.models.detection.ssd import SSD

__all__ = ["build_detector", "ssd_vgg16", "ssdlite_mobilenet_v3"]


@MODELS.register(task="detection")
def ssd_vgg16(*, num_classes: int, image_size: int = 96, width: float = 0.25) -> SSD:
    """SSD with a VGG16 backbone (SSD300-VGG16's layout: conv4_3 with L2 norm, dilated fc6,
    1×1 fc7, four extra stages; aspect ratios ``[2], [2, 3], [2, 3], [2, 3], [2], [2]``), with
    ``width`` × the channels, batch norm, and ``image_size`` × ``image_size`` inputs."""
    from compressflow.nn import ssd

    return ssd.ssd_vgg16(num_classes, image_size, width)


@MODELS.register(task="detection")
def ssdlite_mobilenet_v3(*, num_classes: int, image_size: int = 96, width: float = 0.5) -> SSD:
    """SSDlite with a MobileNetV3-Large backbone (SSDlite320-MobileNetV3-Large's layout: C4
    expansion and C5 maps plus four depthwise extra stages, aspect ratios ``[2, 3]`` on all six),
    ``width_mult=width``, ``image_size`` × ``image_size`` inputs."""
    from compressflow.nn import ssd

    return ssd.ssdlite_mobilenet_v3(num_classes, image_size, width)


def build_detector(name: str, *, num_classes: int, image_size: int = 96, width: float | None = None) -> SSD:
    """The detector ``name`` of :data:`~compressflow.registries.MODELS` (``task="detection"``;
    ``width`` default per model).

    Raises
    ------
    compressflow.registries.UnknownNameError
        A name that is not a registered detector (the message lists the valid ones).
    InputError
        ``num_classes`` < 1, ``image_size`` < 32 or ``width`` <= 0.
    """
    if name not in MODELS.list(task="detection"):
        from compressflow.registries import UnknownNameError

        raise UnknownNameError(MODELS.unknown_message(name, task="detection"))
    builder = MODELS.get(name)
    return builder(num_classes=num_classes, image_size=image_size, **({} if width is None else {"width": width}))
