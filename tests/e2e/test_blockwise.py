"""Blockwise distillation end to end: cache vs recompute, one block per layer and the fan-in
assembly, as one pipeline on the real cluster."""

import numpy as np
import pytest

import compressflow
from compressflow.ops import load_checkpoint

DATA = {"dataset": "digits", "image_size": 8, "channels": 1}


@pytest.mark.slow
def test_blockwise_pipeline_fans_in(client, tmp_path):
    layers = ["layer1.0.conv1", "layer3.1.conv2", "layer4.0.conv1"]
    spec = {
        "name": "tiny-blockwise", "data": DATA,
        "stages": {
            "teacher": {"op": "train", "params": {"model": "resnet18", "width": 0.25, "epochs": 2, "batch_size": 128}},
            "cache": {"op": "activations", "needs": {"model": "teacher"}, "params": {"layers": layers}},
            "blocks": {"op": "replace_layer", "needs": {"teacher": "teacher", "activations": "cache"},
                       "params": {"epochs": 2}, "sweep": {"layer": layers}},
            "student": {"op": "assemble", "needs": {"teacher": "teacher", "blocks": "blocks"},
                        "params": {"max_drop": 1.0, "epochs": 1}},
        },
    }
    tree = compressflow.run(spec, cluster=client, out=tmp_path, show_progress=False)
    assert (tree["tasks"]["status"] == "ok").all()
    blocks = tree["blocks"].to_dataset()
    assert list(blocks.layer.values) == layers
    student = tree["student"].to_dataset()
    assert student["accepted"].values.all() and list(student.layer.values) == layers
    assert float(student.layers_macs_after) < 0.4 * float(student.layers_macs_before)
    assert float(student.macs) < float(student.teacher_macs)
    # the student checkpoint rebuilds with its blocks spliced in
    from compressflow.rundir import RunDir

    rec = RunDir(tmp_path).finished(str(student.task_key.values))
    net = load_checkpoint(rec.record.artifact)
    assert type(net.get_submodule("layer1.0.conv1")).__name__ == "ReplacementBlock"
    assert np.isfinite(float(student.accuracy))
