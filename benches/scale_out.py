"""Scale-out on loopback: two speech-to-speech replicas behind Debian's nginx.

The cluster is what ``deploy/`` describes: ``deploy/nginx/speech-to-speech.conf``
(least_conn, WebSocket upgrade, passive checks) with ``deploy/nginx/health_sync.py``
polling each replica's ``/health`` and marking dead or draining ones ``down``; the
replicas run the bundled Whisper and Piper and share one LLM, SmolLM2 served once
by ``llama_cpp.server`` and reached with ``--llm chat-completions``.

The scenario, in order (``run_scenario``):

1. **spread**: 20 sessions through nginx, each speaks "What is the capital of
   France?" and completes its turn (a ``response.done`` with audio); nginx's
   ``X-Upstream-Addr`` says which replica took each one.
2. **latency**: the round trip of a client event with an immediate reply
   (``input_audio_buffer.clear`` -> ``.cleared``) in 20 sessions through nginx
   and in 20 sessions straight to the replicas, in the same run.
3. **kill**: 8 sessions, spread over both; once each has started its turn, one
   replica is killed (SIGKILL). Its sessions end with a close the client sees;
   the others complete their turns; new sessions go to the survivor. The
   replica is then restarted (as systemd's ``Restart=on-failure`` would).
4. **drain** (with a server that has ``--drain_s``): a session on one replica
   is mid-answer when that replica gets SIGTERM: the answer completes, then
   the session is closed (1001); 4 new sessions all go to the other replica.

    python benches/scale_out.py --json benches/results/scale_out.json

Needs nginx (``apt-get install nginx``) and the ``[test]`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import wave
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "nginx"
AUDIO = ROOT.parent / "shared" / "audio" / "q_capital_france.wav"
CHUNK_MS = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return None


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def speech_appends() -> list[str]:
    """The question at 24 kHz with 1.5 s of silence after, as base64 PCM16 appends."""
    from speech_to_speech import float32_to_pcm16, resample

    with wave.open(str(AUDIO)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    audio = np.asarray(
        resample(pcm.astype(np.float32) / 32768, input_rate=16000, output_rate=24000),
        dtype=np.float32,
    )
    audio = np.concatenate([np.zeros(2400, np.float32), audio, np.zeros(36000, np.float32)])
    step = 24 * CHUNK_MS
    return [
        base64.b64encode(float32_to_pcm16(audio[i : i + step])).decode()
        for i in range(0, len(audio), step)
    ]


class Proc:
    """A child process with its output in a log file."""

    def __init__(self, name: str, command: list[str], workdir: Path) -> None:
        self.name = name
        self.command = command
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.kill()
        self.proc.wait(10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


@dataclass
class Session:
    """What one client saw."""

    replica: str = ""
    completed: bool = False
    audio_bytes: int = 0
    closed_code: int | None = None
    closed_after_done: bool = False
    probes_ms: list[float] = field(default_factory=list)
    error: str = ""


class Cluster:
    """llama_cpp.server, N replicas, health_sync and nginx, all on loopback."""

    def __init__(self, workdir: Path, replicas: int = 2) -> None:
        self.workdir = workdir
        self.llm_port = free_port()
        self.ports = [free_port() for _ in range(replicas)]
        self.lb_port = free_port()
        self.procs: dict[str, Proc] = {}
        self.drain = (
            "--drain_s"
            in subprocess.run(
                [sys.executable, "-m", "speech_to_speech", "--help"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )

    # --- processes ------------------------------------------------------------------

    def start(self) -> None:
        from speech_to_speech.models import smollm2_gguf

        self.procs["llm"] = Proc(
            "llm",
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(smollm2_gguf()),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.llm_port),
                "--n_ctx",
                "2048",
                "--n_threads",
                "1",
                "--n_threads_batch",
                "1",
                # By default a new request cuts the one being streamed short (an
                # empty answer, not an error): the replicas' requests must queue.
                "--interrupt_requests",
                "False",
            ],
            self.workdir,
        ).start()
        for i in range(len(self.ports)):
            self.start_replica(i, wait=False)
        llm_models = f"http://127.0.0.1:{self.llm_port}/v1/models"
        wait_until(lambda: http_status(llm_models) == 200, 120, "llama_cpp.server")
        for i, port in enumerate(self.ports):
            self.wait_replica(i)
            del port
        self.start_balancer()

    def replica_command(self, i: int) -> list[str]:
        command = [
            sys.executable, "-m", "speech_to_speech", "--port", str(self.ports[i]),
            "--llm", "chat-completions", "--llm_base_url", f"http://127.0.0.1:{self.llm_port}/v1",
            "--llm_api_key", "unused", "--llm_model", "smollm2",
            "--max_new_tokens", "20", "--first_audio_priority", "off",
            "--turn_detector", "silence", "--stt_cpu_threads", "1", "--log_level", "warning",
        ]  # fmt: skip
        if self.drain:
            command += ["--drain_s", "20"]
        return command

    def start_replica(self, i: int, *, wait: bool = True) -> None:
        self.procs[f"replica{i}"] = Proc(f"replica{i}", self.replica_command(i), self.workdir)
        self.procs[f"replica{i}"].start()
        if wait:
            self.wait_replica(i)

    def wait_replica(self, i: int) -> None:
        proc = self.procs[f"replica{i}"]

        def up() -> bool:
            if not proc.alive():
                raise RuntimeError(f"replica {i} exited:\n{proc.tail()}")
            return http_status(f"http://127.0.0.1:{self.ports[i]}/health") == 200

        wait_until(up, 180, f"replica {i}")

    def start_balancer(self) -> None:
        prefix = self.workdir / "nginx"
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        upstreams = prefix / "upstreams.conf"
        site = (DEPLOY / "speech-to-speech.conf").read_text()
        site = site.replace("/etc/nginx/speech-to-speech-upstreams.conf", str(upstreams))
        site = site.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{self.lb_port};")
        (prefix / "site.conf").write_text(site)
        conf = prefix / "nginx.conf"
        conf.write_text(
            f"worker_processes 1;\nuser root;\npid {prefix}/nginx.pid;\n"
            f"error_log {prefix}/error.log warn;\nevents {{ worker_connections 1024; }}\n"
            f"http {{\n  access_log {prefix}/access.log;\n"
            f"  client_body_temp_path {prefix}/tmp/body;\n  proxy_temp_path {prefix}/tmp/proxy;\n"
            f"  include {prefix}/site.conf;\n}}\n"
        )
        nginx = ["nginx", "-p", str(prefix), "-c", str(conf)]
        replicas = [f"127.0.0.1:{p}" for p in self.ports]
        sync = [sys.executable, str(DEPLOY / "health_sync.py"), "--upstreams", str(upstreams)]
        subprocess.run([*sync, "--once", "--reload", "", *replicas], check=True)
        self.procs["nginx"] = Proc("nginx", [*nginx, "-g", "daemon off;"], self.workdir).start()
        wait_until(
            lambda: http_status(f"http://127.0.0.1:{self.lb_port}/health") == 200, 30, "nginx"
        )
        reload = " ".join([*nginx, "-s", "reload"])
        self.procs["health_sync"] = Proc(
            "health_sync",
            [*sync, "--interval", "0.3", "--timeout", "0.5", "--reload", reload, *replicas],
            self.workdir,
        ).start()

    def upstream_marked(self, i: int, down: bool) -> bool:
        text = (self.workdir / "nginx" / "upstreams.conf").read_text()
        line = next(x for x in text.splitlines() if f":{self.ports[i]} " in x)
        return line.endswith(" down;") == down

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()

    def replica_name(self, i: int) -> str:
        return f"127.0.0.1:{self.ports[i]}"

    # --- clients --------------------------------------------------------------------

    async def session(
        self,
        url: str,
        appends: list[str] | None,
        *,
        probes: int = 0,
        started: asyncio.Event | None = None,
        go: asyncio.Event | None = None,
        on_response: Any = None,
        timeout: float = 120,
    ) -> Session:
        """One client: connect, time `probes` round trips, speak `appends` (if any) and
        wait for the answer; `started` is set after the first append, the turn waits
        for `go` before going on. `on_response(replica)` runs at response.created; when
        it returns True the client waits, after the answer, for the server to close."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        out = Session()
        watch_close = False
        try:
            async with asyncio.timeout(timeout), connect(url, max_size=None) as ws:
                response = ws.response
                header = response.headers.get("X-Upstream-Addr") if response else None
                out.replica = header or url.split("/")[2]

                async def until(kind: str) -> dict[str, Any]:
                    while True:
                        event = json.loads(await ws.recv())
                        if event["type"] == kind:
                            return event
                        if event["type"] == "response.output_audio.delta":
                            out.audio_bytes += len(base64.b64decode(event["delta"]))
                        if event["type"] == "response.created" and on_response is not None:
                            nonlocal watch_close
                            watch_close = bool(on_response(out.replica))

                await until("session.created")
                for _ in range(probes):
                    t0 = time.perf_counter()
                    await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
                    await until("input_audio_buffer.cleared")
                    out.probes_ms.append((time.perf_counter() - t0) * 1000)
                if appends is None:
                    return out
                for k, chunk in enumerate(appends):
                    await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
                    if k == 0:
                        if started is not None:
                            started.set()
                        if go is not None:
                            await go.wait()
                done = await until("response.done")
                out.completed = done["response"]["status"] == "completed" and out.audio_bytes > 0
                if not out.completed:
                    r = done["response"]
                    out.error = json.dumps(
                        {"status": r["status"], "details": r.get("status_details"),
                         "audio_bytes": out.audio_bytes, "output": r.get("output")}
                    )  # fmt: skip
                # A draining server closes the session after its answer.
                if watch_close:
                    try:
                        await asyncio.wait_for(ws.recv(), 30)
                    except ConnectionClosed as closed:
                        out.closed_code = closed.rcvd.code if closed.rcvd else 1006
                        out.closed_after_done = True
        except ConnectionClosed as closed:
            out.closed_code = closed.rcvd.code if closed.rcvd else 1006
        except (OSError, TimeoutError) as e:
            out.error = f"{type(e).__name__}: {e}"
        return out

    @property
    def lb_url(self) -> str:
        return f"ws://127.0.0.1:{self.lb_port}/v1/realtime"

    def direct_url(self, i: int) -> str:
        return f"ws://127.0.0.1:{self.ports[i]}/v1/realtime"


def p99(values: list[float]) -> float:
    return float(np.percentile(values, 99)) if values else float("nan")


async def scenario(cluster: Cluster, sessions: int) -> dict[str, Any]:
    appends = speech_appends()
    report: dict[str, Any] = {"replicas": [cluster.replica_name(i) for i in range(2)]}

    # 1. spread: every session completes a spoken turn.
    started = time.perf_counter()
    spread = await asyncio.gather(
        *(cluster.session(cluster.lb_url, appends) for _ in range(sessions))
    )
    report["spread_wall_s"] = round(time.perf_counter() - started, 2)
    report["sessions_completed"] = sum(s.completed for s in spread)
    report["sessions_per_replica"] = dict(Counter(s.replica for s in spread))
    report["spread_errors"] = [s.error or s.closed_code for s in spread if not s.completed]

    # 2. latency of an immediate reply, through nginx and direct, same run.
    via_lb = await asyncio.gather(
        *(cluster.session(cluster.lb_url, None, probes=10) for _ in range(sessions))
    )
    direct = await asyncio.gather(
        *(cluster.session(cluster.direct_url(i % 2), None, probes=10) for i in range(sessions))
    )
    lb_ms = [x for s in via_lb for x in s.probes_ms]
    direct_ms = [x for s in direct for x in s.probes_ms]
    report["p99_event_latency_ms_via_lb"] = round(p99(lb_ms), 2)
    report["p99_event_latency_ms_direct"] = round(p99(direct_ms), 2)
    report["p50_event_latency_ms_via_lb"] = round(float(np.median(lb_ms)), 2)
    report["p50_event_latency_ms_direct"] = round(float(np.median(direct_ms)), 2)
    report["event_probes"] = len(lb_ms)

    # 3. kill one replica while every session is in its turn.
    victim = 1
    n = 8
    starts = [asyncio.Event() for _ in range(n)]
    go = asyncio.Event()
    tasks = []
    for e in starts:
        # One at a time, so that least_conn sees each connection before the next.
        tasks.append(
            asyncio.create_task(cluster.session(cluster.lb_url, appends, started=e, go=go))
        )
        await asyncio.wait_for(e.wait(), 60)
    cluster.procs[f"replica{victim}"].signal(signal.SIGKILL)
    go.set()
    killed = await asyncio.gather(*tasks)
    name = cluster.replica_name(victim)
    on_victim = [s for s in killed if s.replica == name]
    others = [s for s in killed if s.replica != name]
    await asyncio.to_thread(wait_until, lambda: cluster.upstream_marked(victim, True), 10, "down")
    after = await asyncio.gather(*(cluster.session(cluster.lb_url, None) for _ in range(4)))
    report["kill"] = {
        "sessions_on_killed": len(on_victim),
        "killed_sessions_closed": sum(
            s.closed_code is not None and not s.completed for s in on_victim
        ),
        "killed_close_codes": sorted({s.closed_code or 0 for s in on_victim}),
        "sessions_on_survivor": len(others),
        "survivor_sessions_completed": sum(s.completed for s in others),
        "new_sessions_on_survivor": sum(s.replica != name and not s.error for s in after),
    }
    await asyncio.to_thread(cluster.start_replica, victim)
    await asyncio.to_thread(wait_until, lambda: cluster.upstream_marked(victim, False), 10, "up")
    # The file says "up" before nginx's reload has taken it in: until a session lands on
    # the restarted replica, nginx may still send every new session to the other one.
    deadline = time.monotonic() + 10
    while (await cluster.session(cluster.lb_url, None)).replica != cluster.replica_name(victim):
        if time.monotonic() > deadline:
            raise TimeoutError("nginx sent no session to the restarted replica")
        await asyncio.sleep(0.1)

    # 4. drain one replica while it answers.
    if not cluster.drain:
        report["drain"] = None
        return report
    drained = 0
    target = cluster.replica_name(drained)

    def on_response(replica: str) -> bool:
        if replica != target:
            return False
        cluster.procs[f"replica{drained}"].signal(signal.SIGTERM)
        return True

    # One at a time, as in the kill step: two connections opened together can both
    # reach the same replica before least_conn counts either of them.
    pair_started = [asyncio.Event() for _ in range(2)]
    pair_tasks = []
    for e in pair_started:
        pair_tasks.append(
            asyncio.create_task(
                cluster.session(cluster.lb_url, appends, started=e, on_response=on_response)
            )
        )
        await asyncio.wait_for(e.wait(), 60)
    pair = await asyncio.gather(*pair_tasks)
    mine = [s for s in pair if s.replica == target]
    await asyncio.to_thread(wait_until, lambda: cluster.upstream_marked(drained, True), 10, "down")
    fresh = await asyncio.gather(*(cluster.session(cluster.lb_url, None) for _ in range(4)))
    proc = cluster.procs[f"replica{drained}"].proc
    exit_code = await asyncio.to_thread(proc.wait, 60) if proc is not None else None
    report["drain"] = {
        "sessions_on_drained": len(mine),
        "drained_turns_completed": sum(s.completed for s in mine),
        "drained_close_codes": [s.closed_code for s in mine],
        "new_sessions": len(fresh),
        "new_sessions_on_drained": sum(s.replica == target for s in fresh),
        "new_session_errors": [s.error for s in fresh if s.error],
        "drained_exit_code": exit_code,
    }
    return report


def run_scenario(workdir: Path, sessions: int = 20) -> dict[str, Any]:
    """Start the cluster in ``workdir``, run the scenario, stop everything."""
    cluster = Cluster(workdir)
    try:
        cluster.start()
        report = asyncio.run(scenario(cluster, sessions))
        report["logs"] = str(workdir)
        return report
    finally:
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--json", type=Path, help="write the report here too")
    parser.add_argument("--workdir", type=Path, default=None, help="logs (default: a temp dir)")
    args = parser.parse_args()
    import tempfile

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="scale-out-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report = run_scenario(workdir, args.sessions)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    os._exit(130)
