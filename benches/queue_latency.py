"""Cross-thread hand-off latency seen from Python: speech_to_speech.Queue against queue.Queue.

A producer thread pushes ``time.perf_counter_ns()`` stamps at a steady pace;
a consumer thread blocked in ``pop(timeout)`` / ``get(timeout)`` records the
receive time minus the stamp. Both queues run at the same time in the same
process (the producer alternates between them), under the same switch
interval, in three scenarios:

* ``native``: a third thread hashes large buffers, which holds the GIL
  between calls and releases it while it computes, like the stage workers
  running model libraries (the default figures, ``queue_p99_us`` etc.: this is
  the contention a voice pipeline has);
* ``python``: the third thread does pure-Python busy work and never releases
  the GIL on its own. No queue can beat the switch interval here: a woken
  consumer waits for CPython to force the GIL over (5 ms by default), so both
  queues show a p99 of one to three switch intervals (``queue_python_p99_us``);
* ``idle``: no third thread.

    python benches/queue_latency.py [--n 1000] [--json PATH] [--switch-interval-us US]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speech_to_speech import Queue

PACE_S = 0.0005


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def _busy_python(stop: threading.Event) -> None:
    # Pure-Python work that never releases the GIL on its own.
    x = 0
    while not stop.is_set():
        for i in range(200):
            x += i * i
    del x


def _busy_native(stop: threading.Event) -> None:
    # hashlib releases the GIL while hashing large buffers (about 0.5 ms here).
    data = bytes(1 << 19)
    while not stop.is_set():
        hashlib.sha256(data).digest()


SCENARIOS: dict[str, Callable[[threading.Event], None] | None] = {
    "python": _busy_python,
    "native": _busy_native,
    "idle": None,
}


def _compare(n: int, pace_s: float, scenario: str) -> dict[str, list[float]]:
    """Both queues at once, one consumer thread each; the producer alternates
    between them, so machine noise falls on both alike."""
    ours = Queue(capacity=1024, overflow="block")
    std: queue.Queue[int] = queue.Queue(maxsize=1024)
    pops: dict[str, Callable[[float], int]] = {
        "queue": lambda t: int(ours.pop(timeout=t)),
        "pyqueue": lambda t: std.get(timeout=t),
    }
    samples: dict[str, list[float]] = {name: [] for name in pops}

    def consume(name: str) -> None:
        pop, out = pops[name], samples[name]
        for _ in range(n):
            stamp = pop(5.0)
            out.append((time.perf_counter_ns() - stamp) / 1000.0)

    stop = threading.Event()
    work = SCENARIOS[scenario]
    threads = [threading.Thread(target=consume, args=(name,)) for name in pops]
    if work:
        threads.append(threading.Thread(target=work, args=(stop,), daemon=True))
    for t in threads:
        t.start()
    try:
        time.sleep(0.01)  # let the consumers block first
        for _ in range(n):
            time.sleep(pace_s)
            ours.push(time.perf_counter_ns())
            time.sleep(pace_s)
            std.put(time.perf_counter_ns())
    finally:
        stop.set()
        for t in threads:
            t.join()
    return samples


def measure_queue(
    n: int = 1000,
    *,
    pace_s: float = PACE_S,
    scenarios: tuple[str, ...] = ("native", "python", "idle"),
) -> dict[str, Any]:
    """Hand-off latency percentiles in microseconds for both queues.

    ``queue_*`` is speech_to_speech.Queue and ``pyqueue_*`` is queue.Queue
    under the first scenario (by default a thread in GIL-releasing native code); the
    other scenarios add keys such as ``queue_idle_p99_us``.
    """
    result: dict[str, Any] = {
        "n": n,
        "pace_us": pace_s * 1e6,
        "switch_interval_us": sys.getswitchinterval() * 1e6,
        "python": sys.version.split()[0],
        "scenarios": list(scenarios),
    }
    _compare(200, pace_s, "idle")  # warm-up, not recorded
    for i, scenario in enumerate(scenarios):
        suffix = "" if i == 0 else f"_{scenario}"
        for name, lat in _compare(n, pace_s, scenario).items():
            result[f"{name}{suffix}_p50_us"] = statistics.median(lat)
            result[f"{name}{suffix}_p99_us"] = _percentile(lat, 99)
            result[f"{name}{suffix}_max_us"] = max(lat)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="hand-offs per queue and scenario")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument(
        "--switch-interval-us",
        type=float,
        help="set sys.setswitchinterval for the whole run (both queues alike)",
    )
    args = parser.parse_args(argv)
    if args.switch_interval_us:
        sys.setswitchinterval(args.switch_interval_us / 1e6)
    r = measure_queue(args.n)
    print(
        f"python {r['python']}, switch interval {r['switch_interval_us']:.0f} us, "
        f"pace {r['pace_us']:.0f} us, n={r['n']}"
    )
    print(f"{'third thread':<14}{'queue':<14}{'p50 us':>10}{'p99 us':>10}{'max us':>10}")
    for i, scenario in enumerate(r["scenarios"]):
        suffix = "" if i == 0 else f"_{scenario}"
        for name, desc in (("queue", "s2s.Queue"), ("pyqueue", "queue.Queue")):
            key = f"{name}{suffix}"
            print(
                f"{scenario:<14}{desc:<14}{r[key + '_p50_us']:>10.1f}"
                f"{r[key + '_p99_us']:>10.1f}{r[key + '_max_us']:>10.1f}"
            )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
