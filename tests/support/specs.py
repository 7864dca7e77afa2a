"""Small specs more than one test module runs or breaks on purpose (each test deep-copies before
editing)."""

#: the 8×8 one-channel digits every small test trains on
DIGITS_8 = {"dataset": "digits", "image_size": 8, "channels": 1}

#: pruning, representation capture, SVCCA, bias and PIEs on one small ResNet
PRUNING = {
    "name": "tiny-pruning", "data": DIGITS_8,
    "stages": {
        "original": {"op": "train", "params": {"model": "resnet18", "width": 0.25, "epochs": 3, "batch_size": 128}},
        "pruned": {"op": "prune", "needs": {"model": "original"}, "params": {"epochs": 1, "batch_size": 256},
                   "sweep": {"method": ["magnitude", "reinit", "random", "filters"], "sparsity": [0.5], "seed": [0, 1]}},
        "probe_original": {"op": "capture", "needs": {"model": "original"}, "params": {"probe": 128}},
        "probe_pruned": {"op": "capture", "needs": {"model": "pruned"}, "params": {"probe": 128}},
        "similarity": {"op": "svcca", "needs": {"a": "probe_pruned", "b": "probe_original"}, "params": {"keep": 10}},
        "itself": {"op": "svcca", "needs": {"a": "probe_original", "b": "probe_original"}, "params": {"cross": True}},
        "bias": {"op": "bias", "needs": {"model": "pruned", "original": "original"}},
        "pies": {"op": "pie", "needs": {"models": "bias"}},
    },
}


#: blockwise distillation of one layer: teacher, activation cache, replaced block, assembly
BLOCKWISE = {
    "name": "bw-input", "data": DIGITS_8,
    "stages": {
        "teacher": {"op": "train", "params": {"model": "resnet18", "width": 0.25, "epochs": 1, "batch_size": 256}},
        "cache": {"op": "activations", "needs": {"model": "teacher"}, "params": {"layers": ["layer1.0.conv1"]}},
        "blocks": {"op": "replace_layer", "needs": {"teacher": "teacher", "activations": "cache"},
                   "params": {"epochs": 1}, "sweep": {"layer": ["layer1.0.conv1"]}},
        "student": {"op": "assemble", "needs": {"teacher": "teacher", "blocks": "blocks"},
                    "params": {"max_drop": 1.0, "epochs": 1, "batch_size": 256}},
    },
}
