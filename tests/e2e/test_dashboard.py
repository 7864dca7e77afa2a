"""The plugin on a real (in-process) scheduler: installed once, its page, data and BokehJS
served by the dashboard's HTTP server, past events replayed, Dask's own transitions for tasks
that end without an event, a study chosen by id, a dashboard under a prefix."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from distributed import Client, LocalCluster

from compressflow.dashboard import DashboardPlugin, install_dashboard
from compressflow.engine.events import STUDY, TASK
from compressflow.engine.node import dask_key

EVENT = {"study": "s1", "name": "demo", "out": "/runs/demo", "pue": 1.0, "intensity_g_per_kwh": 100.0,
         "stages": {"teacher": ["k-ok", "k-boom"], "test": ["k-after"]}, "reused": {}}


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as lc, \
            Client(lc) as c:
        c.log_event(STUDY, EVENT)  # before the plugin: replayed from the scheduler's event log
        yield lc, c


def url(cluster, path: str = "") -> str:
    lc, _ = cluster
    return f"http://127.0.0.1:{lc.scheduler.http_server.port}/compressflow{path}"


def get(address: str) -> tuple[int, str]:
    with urllib.request.urlopen(address, timeout=10) as r:
        return r.status, r.read().decode()


def data(cluster, query: str = "") -> dict:
    return json.loads(get(url(cluster, "/data.json" + query))[1])


def wait_for(check, timeout: float = 10.0):
    end = time.time() + timeout
    while time.time() < end:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture(scope="module")
def installed(cluster):
    lc, c = cluster
    first, second = install_dashboard(c), install_dashboard(c)
    return lc, c, first, second


def test_installed_once_and_the_link_replaces_status(installed):
    lc, c, first, second = installed
    assert first == second == c.dashboard_link.replace("/status", "/compressflow")
    plugins = [p for p in lc.scheduler.plugins.values() if isinstance(p, DashboardPlugin)]
    assert len(plugins) == 1


def test_page_data_and_bokehjs_are_served(installed, cluster):
    status, page = get(url(cluster))
    assert status == 200 and "<title>compressflow — Dask dashboard</title>" in page
    assert 'src="/compressflow/static/js/bokeh.min.js"' in page and '<tr data-stage="teacher">' in page
    status, js = get(url(cluster, "/static/js/bokeh.min.js"))
    from bokeh.util.paths import bokehjs_path

    assert status == 200 and js == (bokehjs_path() / "js" / "bokeh.min.js").read_text()  # the installed bokeh's, no CDN
    assert get(url(cluster, "/"))[0] == 200  # redirected to the page
    replayed = data(cluster)
    assert replayed["study"] == "s1" and [r["pending"] for r in replayed["table"]] == [2, 1]


def test_events_and_dask_transitions_update_the_page(installed, cluster):
    _, c, *_ = installed
    c.log_event(TASK, {"study": "s1", "key": "k-ok", "stage": "teacher", "event": "end", "status": "ok",
                       "energy_kwh": 0.25, "accuracy": 0.5, "val_accuracy": 0.5, "worker": "w"})

    def boom():
        raise RuntimeError("boom")

    def nothing(x=None):
        return x

    # k-boom: Dask itself gives up on it (no end event); k-after: returns at once, with no event; both
    # under their Dask keys in s1, as a study submits them
    futures = [c.submit(boom, key=dask_key("k-boom", "s1"), retries=0),
               c.submit(nothing, key=dask_key("k-after", "s1"))]  # kept: not released
    wait_for(lambda: data(cluster)["table"][0]["failed"] == 1)
    row = data(cluster)["table"][0]
    assert (row["ok"], row["failed"], row["kwh"], row["co2_g"]) == (1, 1, 0.25, 25.0)
    assert wait_for(lambda: data(cluster)["table"][1]["ok"] == 1)
    del futures
    _, page = get(url(cluster))
    assert "<td>0.25</td><td>25</td>" in page  # kWh and gCO2 of the teacher as text


def test_a_study_chosen_by_id(installed, cluster):
    _, c, *_ = installed
    c.log_event(STUDY, {**EVENT, "study": "s2", "name": "second", "stages": {"only": ["z"]}})
    assert wait_for(lambda: data(cluster)["study"] == "s2")
    assert data(cluster, "?study=s1")["stages"] == ["teacher", "test"]
    _, page = get(url(cluster, "?study=s1"))
    assert 'data-study="s1"' in page and 'href="?study=s2"' in page


def test_a_dashboard_with_a_prefix_serves_the_page_under_it():
    with LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0",
                      scheduler_kwargs={"http_prefix": "/lab/dask"}) as lc, Client(lc) as c:
        install_dashboard(c)
        c.log_event(STUDY, {**EVENT, "study": "p1"})
        base = f"http://127.0.0.1:{lc.scheduler.http_server.port}/lab/dask/compressflow"
        status, page = get(base)
        assert status == 200 and 'src="/lab/dask/compressflow/static/js/bokeh.min.js"' in page
        assert get(base + "/static/js/bokeh.min.js")[0] == 200
        assert wait_for(lambda: json.loads(get(base + "/data.json")[1])["study"] == "p1")
