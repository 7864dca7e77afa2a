"""What the embedded cluster's TLS (the default since it is secure by default) costs per task,
measured side by side in one run against the plain-TCP opt-out (``security: none``).

For each transport: one worker, one torch thread, warmed as in ``overhead.py`` (the one-time
imports are not the transport's cost), then N zero-second ``wait`` tasks through
``compressflow.run`` and N ``client.submit`` no-ops on the same cluster (``overhead.py``'s
``per_task_overhead``). Reported: milliseconds per task through the runner and through plain
Dask on each transport, and the TLS/TCP ratio of each. Cluster start-up (making the
throw-away certificate, TLS handshakes of nannies and workers) is timed separately.

Usage: ``python benchmarks/tls_overhead.py [--tasks 200] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from distributed import Client

sys.path.insert(0, str(Path(__file__).parent))
from overhead import per_task_overhead, warm_worker  # noqa: E402

from compressflow.engine.cluster import local_cluster  # noqa: E402

TRANSPORTS = {"tls": "temporary", "tcp": "none"}


def measure(security: str, tasks: int) -> dict[str, float]:
    """Start-up seconds and per-task milliseconds (runner, plain submit) on one transport."""
    t0 = time.perf_counter()
    with local_cluster(n_workers=1, torch_threads=1, dashboard_address=":0", security=security) as cluster, \
            Client(cluster) as client:
        client.gather(client.submit(time.sleep, 0, pure=False))
        start = time.perf_counter() - t0
        client.run(warm_worker)
        runner, plain = per_task_overhead(client, tasks)
    return {"start_s": start, "runner_ms": runner / tasks * 1e3, "plain_ms": plain / tasks * 1e3}


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2, help="alternating TLS/TCP rounds; medians are reported")
    args = ap.parse_args(argv)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in TRANSPORTS}
    for _ in range(args.repeats):  # alternate, so a change in machine load hits both alike
        for name, security in TRANSPORTS.items():
            runs[name].append(measure(security, args.tasks))
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    tls, tcp = med["tls"], med["tcp"]
    result = {
        "tls_runner_ms": tls["runner_ms"], "tcp_runner_ms": tcp["runner_ms"],
        "tls_plain_ms": tls["plain_ms"], "tcp_plain_ms": tcp["plain_ms"],
        "tls_start_s": tls["start_s"], "tcp_start_s": tcp["start_s"],
        "runner_ratio": tls["runner_ms"] / tcp["runner_ms"], "plain_ratio": tls["plain_ms"] / tcp["plain_ms"],
    }
    print(f"per task through compressflow.run ({args.tasks} wait tasks, 1 worker, median of {args.repeats}): "
          f"TLS {tls['runner_ms']:.1f} ms, TCP {tcp['runner_ms']:.1f} ms -> ratio {result['runner_ratio']:.2f} "
          f"(+{tls['runner_ms'] - tcp['runner_ms']:.1f} ms/task)")
    print(f"per task through plain client.submit: TLS {tls['plain_ms']:.2f} ms, TCP {tcp['plain_ms']:.2f} ms -> "
          f"ratio {result['plain_ratio']:.2f}")
    print(f"cluster start to first result: TLS {tls['start_s']:.1f} s, TCP {tcp['start_s']:.1f} s")
    return result


if __name__ == "__main__":
    main()
