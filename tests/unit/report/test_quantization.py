"""The quantization section on a hand-built tree: int8 rows beside the float stages, with the
numbers the records hold (mean ± sample std over seeds, bytes, µs, µWh)."""

import numpy as np
import xarray as xr

from compressflow.report.quantization import quantization_section, quantization_table


def _tree(with_qat: bool = True) -> xr.DataTree:
    student = xr.Dataset({"accuracy": ("seed", [0.90, 0.92])}, coords={"seed": [0, 1]}, attrs={"op": "train"})
    groups = {"student": student}
    if with_qat:
        per = ("seed", "arithmetic")
        groups["qat"] = xr.Dataset(
            {"accuracy": ("seed", [0.80, 0.84]),
             "model_bytes": (per, [[100_000, 400_000], [100_000, 400_000]]),
             "latency_s": (per, [[1e-4, 2e-4], [1e-4, 3e-4]]),
             "inference_energy_kwh": (per, [[1e-9, 2e-9], [3e-9, 4e-9]]),
             "speedup": ("seed", [2.0, 3.0])},
            coords={"seed": [0, 1], "arithmetic": ["int8", "fp32"]}, attrs={"op": "quantize"})
    return xr.DataTree.from_dict({name: ds for name, ds in groups.items()})


def test_table_rows_hold_the_records_numbers():
    lines = quantization_table(_tree()).splitlines()
    assert lines[2] == "| student | fp32 | 91.00 ± 1.41 % |  |  |  |  |"
    # int8 accuracy 82 ± 2.83; bytes 100,000 vs 400,000 = 0.25x; latency 100 µs vs mean(200, 300) µs;
    # speedup mean 2.5 ± std 0.71; energy per sample mean(1, 3) µWh vs mean(2, 4) µWh
    assert lines[3] == ("| qat | int8 | 82.00 ± 2.83 % | 100,000 / 400,000 (0.25×) | 100 / 250 | 2.50 ± 0.71× "
                        "| 2 / 3 |")


def test_section_draws_its_plot_and_is_absent_without_quantize(tmp_path):
    text = quantization_section(_tree(), tmp_path)
    assert text.startswith("## Quantization-aware training (int8) vs float") and "![int8 vs fp32](quantization.png)" in text
    assert (tmp_path / "quantization.png").stat().st_size > 1000
    assert quantization_section(_tree(with_qat=False), tmp_path / "none") is None
    assert quantization_table(_tree(with_qat=False)) is None


def test_unmetered_energy_says_so():
    tree = _tree()
    qat = tree["qat"].to_dataset()
    qat["inference_energy_kwh"] = xr.full_like(qat["inference_energy_kwh"], np.nan)
    tree["qat"] = xr.DataTree(qat)
    assert quantization_table(tree).splitlines()[3].endswith("| not metered |")
