"""The soak in CI: benches/soak.py for 2 minutes, 4 sessions, every kind of traffic.

Targets as for the 20-minute run of the README: server RSS growth <= 5 % (from
mid-run to the end), no descriptor or thread growth, no session left, no
unexpected error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[1] / "benches" / "soak.py"
AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio" / "q_capital_france.wav"


@pytest.mark.skipif(not AUDIO.exists(), reason="shared test audio not found")
def test_two_minute_soak_meets_the_targets() -> None:
    out = subprocess.run(
        [sys.executable, str(SOAK), "--minutes", "2", "--sessions", "4", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    r = json.loads(out.stdout)
    # Every kind of traffic was exercised.
    assert all(n > 0 for n in r["actions"].values()), r["actions"]
    assert r["errors_expected"] > 0
    assert r["errors_unexpected"] == 0, r["problems"]
    assert r["sessions_leaked"] == 0
    assert r["fd_growth"] == 0 and r["thread_growth"] == 0, (r["idle_before"], r["idle_after"])
    assert r["rss_growth_percent"] <= 5.0, r["rss_kib"]
    # /metrics saw the traffic: every latency histogram has observations.
    stages = ("vad_decision", "stt", "llm_first_token", "tts_first_chunk", "voice_to_voice")
    assert all(r["latency_observations"].get(s, 0) > 0 for s in stages), r["latency_observations"]
    assert r["latency_observations"]["stt"] >= r["actions"]["turn"]
