"""Triton serving latency and throughput on loopback (pytriton's tritonserver, CPU).

    .venv/bin/python benchmarks/serving.py BUNDLE [BUNDLE ...] [--requests 30] [--concurrency 4]

For each bundle: writes the python-variant model repository, starts the server, and measures
sequential request latency (HTTP and gRPC, median / p90 over ``--requests``) and throughput
with ``--concurrency`` client threads, next to in-process ``Detector.predict`` (ONNX Runtime)
on the same inputs. Also checks every served result against ``Detector.predict``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sample(family: str, bundle, rng):
    from tests.export.families import CASES

    x = CASES[family].sample(rng, bundle)
    return x["x"] if list(x) == ["x"] else x


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="+")
    p.add_argument("--requests", type=int, default=30)
    p.add_argument("--concurrency", type=int, default=4)
    args = p.parse_args()

    import edgesentry
    from edgesentry.bundle import Bundle
    from edgesentry.serving import write_model_repository
    from edgesentry.serving.local import LocalTritonServer

    bundles = [Bundle.open(b) for b in args.bundles]
    repo = Path(tempfile.mkdtemp(prefix="es-triton-bench-")) / "repo"
    for b in bundles:
        write_model_repository(b, repo, variant="python", example=_sample(b.family, b, np.random.default_rng(0)))
    t0 = time.perf_counter()
    with LocalTritonServer(repo) as server:
        print(f"server ready in {time.perf_counter() - t0:.1f} s (python backend, CPU)")
        from edgesentry.serving import Client

        print("| family | protocol | median ms | p90 ms | in-process predict median ms | throughput req/s "
              f"({args.concurrency} threads) | max abs diff vs predict |")
        print("|---|---|---|---|---|---|---|")
        for b in bundles:
            det = edgesentry.load(b, backend="onnxruntime")
            rng = np.random.default_rng(1)
            xs = [_sample(b.family, b, rng) for _ in range(args.requests)]
            local = []
            wants = []
            for x in xs:
                t = time.perf_counter()
                wants.append(det.predict(x))
                local.append(time.perf_counter() - t)
            for proto, url in (("http", server.http_url), ("grpc", server.grpc_url)):
                client = Client(url, model=b.family, protocol=proto)
                client.predict(xs[0])  # warm-up
                lat, diff = [], 0.0
                for x, want in zip(xs, wants):
                    t = time.perf_counter()
                    got = client.predict(x)
                    lat.append(time.perf_counter() - t)
                    diff = max(diff, abs(got.raw_score - want.raw_score))
                    if want.anomaly_map is not None:
                        diff = max(diff, float(np.abs(got.anomaly_map - want.anomaly_map).max()))
                done = [0]

                def worker(idx: int, proto=proto, url=url, family=b.family, xs=xs, done=done) -> None:
                    c = Client(url, model=family, protocol=proto)
                    for x in xs[idx :: args.concurrency]:
                        c.predict(x)
                        done[0] += 1
                    c.close()

                threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.concurrency)]
                t = time.perf_counter()
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                rate = done[0] / (time.perf_counter() - t)
                print(f"| {b.family} | {proto} | {1e3 * np.median(lat):.1f} | {1e3 * np.quantile(lat, 0.9):.1f} | "
                      f"{1e3 * np.median(local):.1f} | {rate:.1f} | {diff:.2e} |")
                client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
