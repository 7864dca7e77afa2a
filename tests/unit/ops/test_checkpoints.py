"""compressflow.ops.load_checkpoint on files that match their recorded hash but are not
compressflow checkpoints: each is one InputError line naming the file, and none runs code;
a crash while saving keeps the previous checkpoint loadable."""

from __future__ import annotations

import io
import os
import re

import pytest
import torch

from compressflow.errors import InputError
from compressflow.nn.models import build_model
from compressflow.ops import load_checkpoint, save_checkpoint
from compressflow.rundir.files import sha256_file
from compressflow.rundir.records import Artifact

KWARGS = {"num_classes": 10, "in_channels": 1, "width": 0.125}


class Payload:
    """Unpickling this calls ``call(*args)``: a checkpoint crafted to run code."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def recorded(path) -> Artifact:
    """The artifact a record would hold for ``path`` as it is now (hash matching), e.g. hand-written."""
    return Artifact("checkpoint", str(path), sha256_file(path), {"model": "resnet18", "kwargs": KWARGS})


def torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def good_blob():
    torch.manual_seed(0)
    net = build_model("resnet18", **KWARGS)
    return {"model": "resnet18", "kwargs": KWARGS, "surgery": {}, "state_dict": net.state_dict()}


def test_a_real_checkpoint_still_rebuilds_its_model(tmp_path, good_blob):
    net = build_model("resnet18", **KWARGS)
    net.load_state_dict(good_blob["state_dict"])
    art = save_checkpoint(net, tmp_path / "m.pt", model_name="resnet18", model_kwargs=KWARGS)
    loaded = load_checkpoint(art)
    for name, value in good_blob["state_dict"].items():
        assert torch.equal(loaded.state_dict()[name], value)


def test_a_checkpoint_that_would_run_code_is_refused_and_does_not(tmp_path, good_blob):
    marker = tmp_path / "pwned"
    path = tmp_path / "m.pt"
    path.write_bytes(torch_bytes({**good_blob, "kwargs": Payload(os.system, f"touch {marker}")}))
    with pytest.raises(InputError) as info:
        load_checkpoint(recorded(path))
    assert not marker.exists()
    assert str(info.value) == (
        f"checkpoint {str(path)!r} is not a compressflow checkpoint (UnpicklingError: Trying to load unsupported "
        "GLOBAL posix.system whose module posix is blocked.); re-run the stage that produced it")


def wrong_shapes(blob):
    wide = build_model("resnet18", **{**KWARGS, "width": 0.25})  # weights of another width than kwargs say
    return torch_bytes({**blob, "state_dict": wide.state_dict()})


@pytest.mark.parametrize(("make", "detail"), [
    (lambda blob: b"not a checkpoint at all", r"UnpicklingError: Unsupported operand 110"),
    (lambda blob: b"", r"EOFError: EOFError"),
    (lambda blob: torch_bytes(blob)[:5000], r"(RuntimeError: PytorchStreamReader failed|OSError: )"),  # truncated
    (lambda blob: torch_bytes(torch.zeros(3)), r"it holds a Tensor, not a dict"),
    (lambda blob: torch_bytes({k: v for k, v in blob.items() if k != "state_dict"}),
     r"no 'state_dict' entry; it holds 'model', 'kwargs', 'surgery'"),
    (lambda blob: torch_bytes({**blob, "kwargs": [1, 2]}), r"'kwargs' is a list, not a dict"),
    (lambda blob: torch_bytes({**blob, "model": "nope"}), r"UnknownNameError: .*unknown model 'nope'; valid choices"),
    (lambda blob: torch_bytes({**blob, "kwargs": {"depth": 3}}), r"InputError: model 'resnet18' got arguments \['depth'\]"),
    (lambda blob: torch_bytes({**blob, "surgery": {"conv1": "no_such_block"}}), r"UnknownNameError: .*no_such_block"),
    (lambda blob: torch_bytes({**blob, "state_dict": {"fc.weight": torch.zeros(1)}}),
     r"RuntimeError: Error\(s\) in loading state_dict for .*: Missing key\(s\)"),
    (wrong_shapes, r"RuntimeError: Error\(s\) in loading state_dict for .*size mismatch for conv1.weight"),
])
def test_a_file_matching_its_hash_but_not_a_checkpoint_is_one_line(tmp_path, good_blob, make, detail):
    path = tmp_path / "m.pt"
    path.write_bytes(make(good_blob))
    with pytest.raises(InputError) as info:
        load_checkpoint(recorded(path))
    message = str(info.value)
    assert re.match(rf"checkpoint {re.escape(repr(str(path)))} is not a compressflow checkpoint \({detail}", message), message
    assert message.endswith("; re-run the stage that produced it") and "\n" not in message and len(message) < 400


def test_hash_is_still_checked_first(tmp_path, good_blob):
    path = tmp_path / "m.pt"
    path.write_bytes(torch_bytes(good_blob))
    art = recorded(path)
    path.write_bytes(b"swapped after the record was written")
    with pytest.raises(InputError, match=r"does not match its recorded sha256"):
        load_checkpoint(art)


@pytest.mark.parametrize("content, fragment", [
    (b"not a torch file", r"not a compressflow block \(UnpicklingError|RuntimeError"),
    ("payload", r"not a compressflow block \(UnpicklingError: .*posix.system|builtins"),
    ({"layer": "conv1", "block": "ds2"}, r"does not rebuild a 'ds2' block for this teacher \(KeyError: 'state_dict'\)"),
    ({"layer": "nope", "block": "ds2", "state_dict": {}}, r"does not rebuild a 'ds2' block .*AttributeError"),
])
def test_a_block_artifact_that_is_not_a_block_is_one_line(tmp_path, content, fragment):
    """assemble reads each replace_layer block through the same verified weights-only loader as
    checkpoints: a file that matches its recorded hash but is not a block is one InputError line
    naming it, and a crafted one runs nothing."""
    from compressflow.ops.blockwise import _load_block

    marker = tmp_path / "pwned"
    path = tmp_path / "b.block.pt"
    if content == "payload":
        content = torch_bytes(Payload(os.system, f"touch {marker}"))
    path.write_bytes(content if isinstance(content, bytes) else torch_bytes(content))
    art = Artifact("block", str(path), sha256_file(path), {"layer": "conv1", "block": "ds2"})
    with pytest.raises(InputError) as err:
        _load_block(art, build_model("resnet18", **KWARGS), torch.device("cpu"))
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and re.search(fragment, msg), msg
    assert not marker.exists()


def test_crash_while_saving_a_checkpoint_keeps_the_loadable_previous(tmp_path, monkeypatch):
    net = build_model("wrn_16_1", num_classes=10, in_channels=1, width=0.5)
    art = save_checkpoint(net, tmp_path / "m.pt", model_name="wrn_16_1",
                          model_kwargs={"num_classes": 10, "in_channels": 1, "width": 0.5})
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        save_checkpoint(build_model("wrn_16_1", num_classes=10, in_channels=1, width=0.5), tmp_path / "m.pt",
                        model_name="wrn_16_1", model_kwargs={"num_classes": 10, "in_channels": 1, "width": 0.5})
    monkeypatch.undo()
    again = load_checkpoint(art)  # hash still matches: the old file is intact
    for a, b in zip(again.state_dict().values(), net.state_dict().values()):
        torch.testing.assert_close(a, b)
