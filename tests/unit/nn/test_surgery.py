"""Model surgery: a layer's inputs/outputs equal a full forward's (stopping early), and a spliced
copy replaces only the named layers."""

import torch
from torch import nn

from compressflow.nn.models import build_model
from compressflow.nn.surgery import layer_io, replaceable_layers, spliced


def test_layer_io_matches_a_full_forward_and_stops_early():
    torch.manual_seed(0)
    net = build_model("resnet18", num_classes=10, width=0.25).eval()
    x = torch.randn(3, 3, 16, 16)
    name = replaceable_layers(net)[5]
    captured = {}
    handle = net.get_submodule(name).register_forward_hook(lambda m, i, o: captured.update(i=i[0], o=o))
    net(x)
    handle.remove()
    calls = []
    handle = net.fc.register_forward_hook(lambda *a: calls.append(1))
    inp, out = layer_io(net, name, x)
    handle.remove()
    assert torch.equal(inp, captured["i"]) and torch.equal(out, captured["o"])
    assert calls == []  # the head never ran: only the prefix was computed


def test_spliced_copy_replaces_only_named_layers():
    net = build_model("vgg16", num_classes=10, width=0.25).eval()
    name = replaceable_layers(net)[3]
    marker = nn.Conv2d(net.get_submodule(name).in_channels, net.get_submodule(name).out_channels, 3, padding=1)
    new = spliced(net, {name: marker})
    assert isinstance(net.get_submodule(name), nn.Conv2d) and net.get_submodule(name) is not new.get_submodule(name)
    assert torch.equal(new.get_submodule(name).weight, marker.weight)
    other = replaceable_layers(net)[0]
    assert torch.equal(new.get_submodule(other).weight, net.get_submodule(other).weight)
