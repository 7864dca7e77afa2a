"""The dashboard plugin without a running study: a refused plugin does not fail the run, the
dashboard link's forms, and the study event of a real graph."""

from __future__ import annotations

import logging

from compressflow.dashboard import dashboard_link, install_dashboard, study_event


def test_a_refusing_scheduler_does_not_fail_the_run(caplog):
    class Refusing:
        dashboard_link = "http://127.0.0.1:8787/status"

        def register_plugin(self, plugin, name):
            raise ModuleNotFoundError("No module named 'compressflow'")

    with caplog.at_level(logging.WARNING, logger="compressflow.dashboard"):
        assert install_dashboard(Refusing()) is None
    assert "refused the dashboard page" in caplog.text and "No module named 'compressflow'" in caplog.text


def test_dashboard_link_forms():
    class Fake:
        def __init__(self, link):
            self.dashboard_link = link

    assert dashboard_link(Fake("http://h:8787/status")) == "http://h:8787/compressflow"
    assert dashboard_link(Fake("http://h:8787/prefix/status")) == "http://h:8787/prefix/compressflow"
    assert dashboard_link(Fake(None)) is None


def test_study_event_of_a_real_graph(tmp_path):
    from compressflow.energy import carbon_intensity
    from compressflow.engine.graph import build_graph, expand
    from compressflow.rundir.records import LedgerEntry
    from compressflow.spec import load_spec
    from tests.support import tiny_spec

    spec = load_spec({**tiny_spec(), "energy": {"country": "FRA", "pue": 1.2}})
    stages = expand(spec)
    key = stages["teacher"][0].key
    reused = {key: LedgerEntry(key, "teacher", "train", {}, status="ok", energy={"energy_kwh": 0.2})}
    event = study_event(build_graph(spec, tmp_path, reused, stages=stages), "abc", out=tmp_path)
    assert event["study"] == "abc" and event["name"] == "tiny" and event["out"] == str(tmp_path)
    assert event["stages"] == {s: [n.key for n in nodes] for s, nodes in stages.items()}
    assert event["pue"] == 1.2 and event["intensity_g_per_kwh"] == carbon_intensity("FRA")
    assert event["reused"][key]["energy_kwh"] == 0.2 and event["reused"][key]["accuracy"] is None
    assert study_event(build_graph(spec, tmp_path, stages=stages), "x", 10.0, 2.0)["intensity_g_per_kwh"] == 10.0
