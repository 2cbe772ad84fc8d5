"""Two replicas behind Debian's nginx on loopback, with the LLM served once by
llama_cpp.server: sessions spread and complete, a killed replica ends only its own
sessions, a drained one finishes its turns and takes no new ones.

The cluster and scenario are ``benches/scale_out.py`` (which also reports the
latency figures); this file holds them to the behaviour. CI installs nginx
(``.ci/run``); elsewhere the test skips without it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from speech_checks import AUDIO

ROOT = Path(__file__).resolve().parents[1]


def _harness() -> Any:
    spec = importlib.util.spec_from_file_location("scale_out", ROOT / "benches" / "scale_out.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["scale_out"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if shutil.which("nginx") is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed (.ci/run installs it)")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    if not (AUDIO / "q_capital_france.wav").exists():
        pytest.skip("shared test audio not found")
    result: dict[str, Any] = _harness().run_scenario(tmp_path_factory.mktemp("scale-out"))
    print("\nscale-out:", {k: v for k, v in result.items() if k != "logs"})
    return result


def test_twenty_sessions_spread_over_both_replicas_and_complete(report: dict[str, Any]) -> None:
    assert report["sessions_completed"] == 20, report["spread_errors"]
    per_replica = report["sessions_per_replica"]
    assert sorted(per_replica) == sorted(report["replicas"]), per_replica
    # least_conn: neither replica takes more than two thirds.
    assert max(per_replica.values()) <= 14, per_replica


def test_killing_a_replica_ends_only_its_sessions(report: dict[str, Any]) -> None:
    kill = report["kill"]
    assert kill["sessions_on_killed"] >= 2 and kill["sessions_on_survivor"] >= 2, kill
    assert kill["killed_sessions_closed"] == kill["sessions_on_killed"], kill
    assert kill["survivor_sessions_completed"] == kill["sessions_on_survivor"], kill
    assert kill["new_sessions_on_survivor"] == 4, kill


def test_a_drained_replica_finishes_its_turn_and_gets_no_new_sessions(
    report: dict[str, Any],
) -> None:
    drain = report["drain"]
    if drain is None:
        pytest.skip("this server has no SIGTERM drain (--drain_s) yet")
    assert drain["sessions_on_drained"] == 1, drain
    assert drain["drained_turns_completed"] == 1, drain
    assert drain["drained_close_codes"] == [1001], drain
    assert drain["new_sessions_on_drained"] == 0 and not drain["new_session_errors"], drain
    assert drain["drained_exit_code"] == 0, drain


def test_the_balancer_adds_little_to_an_event_round_trip(report: dict[str, Any]) -> None:
    assert report["event_probes"] == 200
    # Loose: nginx forwards frames as they come; a bound a busy 2-core box keeps.
    assert report["p99_event_latency_ms_via_lb"] < 250, report
