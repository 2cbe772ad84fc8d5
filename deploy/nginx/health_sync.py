#!/usr/bin/env python3
"""Active /health checks for open-source nginx, which only has passive ones.

Polls ``GET http://REPLICA/health`` on every replica; a replica that does not
answer 200 in time (dead, hung, or draining: 503 ``{"status": "draining"}``) is
written ``down`` into the upstream file that ``speech-to-speech.conf`` includes,
and nginx is reloaded when the file changes. Reloading keeps open WebSockets on
the old workers until they close, so marking a replica down never cuts a session;
it only stops new ones from going there.

    python3 health_sync.py --upstreams /etc/nginx/speech-to-speech-upstreams.conf \\
        10.0.0.5:8765 10.0.0.6:8765                 # every 2 s until stopped
    python3 health_sync.py --once ...              # one pass (cron, tests)

Standard library only: it runs on the balancer, which has no speech-to-speech.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def healthy(replica: str, timeout: float) -> bool:
    """Whether the replica's /health answers 200."""
    try:
        with urllib.request.urlopen(f"http://{replica}/health", timeout=timeout) as r:
            return int(r.status) == 200
    except OSError:  # refused, timed out, or an HTTP error status (503 while draining)
        return False


def render(replicas: list[str], up: dict[str, bool]) -> str:
    """The upstream file: one server line per replica, `down` where unhealthy."""
    lines = ["# Written by health_sync.py from GET /health; edits are overwritten."]
    for replica in replicas:
        down = "" if up[replica] else " down"
        lines.append(f"server {replica} max_fails=1 fail_timeout=5s{down};")
    return "\n".join(lines) + "\n"


def sync_once(replicas: list[str], path: Path, reload: list[str], timeout: float) -> bool:
    """Check every replica, rewrite the file and reload nginx if it changed."""
    text = render(replicas, {r: healthy(r, timeout) for r in replicas})
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    if reload:
        subprocess.run(reload, check=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("replicas", nargs="+", help="HOST:PORT of each replica")
    parser.add_argument("--upstreams", type=Path, required=True, help="file nginx includes")
    parser.add_argument("--reload", default="nginx -s reload", help="command that reloads nginx")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between passes")
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds a check may take")
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    args = parser.parse_args(argv)
    reload = shlex.split(args.reload)
    while True:
        try:
            if sync_once(args.replicas, args.upstreams, reload, args.timeout):
                print(args.upstreams.read_text(), end="", flush=True)
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"health_sync: {e}", file=sys.stderr, flush=True)
            if args.once:
                return 1
        if args.once:
            return 0
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
