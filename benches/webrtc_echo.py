"""Latency the WebRTC transport adds on loopback: audio frame in to echoed frame out.

    python benches/webrtc_echo.py [--seconds 10] [--json PATH]

An aiortc client (a WebRTC stack written by others) sends a spoken question
as its microphone track, in real time, to the core's echo server
(`_core.WebRtcEchoServer`: the real UDP endpoint, HTTP handler and call
tasks). For every frame the server reports the time from the arrival of its
packet to the departure of the first of its samples in an echoed frame:
SRTP, Opus decoding, the hand-off to the application and back, resampling,
the outgoing queue and pacer, Opus encoding, SRTP. In the same run the
client measures the whole round trip (its own encoding, jitter buffer and
decoding included), the reference the server's share is a ratio of. Echo
rate 48000 hands the decoded frames back as they are; 24000 goes down to
24 kHz and back up, as a session's audio does: the resamplers' look-ahead
holds the last few samples of each frame back until the next one comes, so
the rest of a frame leaves one frame (20 ms) later, which the client's round
trip shows. aiortc's own audio jitter buffer waits for 4 frames (80 ms)
before it plays anything, most of its round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_webrtc import RATE, ArrayTrack, _best_alignment, _speech, connect

from speech_to_speech._core import WebRtcEchoServer

FRAME = 960


class TimedTrack(ArrayTrack):
    """The question's track, noting when each frame left for the encoder."""

    def __init__(self, samples: np.ndarray) -> None:
        super().__init__(samples)
        self.sent_at: list[float] = []

    async def recv(self) -> Any:
        frame = await super().recv()
        self.sent_at.append(time.monotonic())
        return frame


async def run(echo_rate: int, seconds: float) -> dict[str, Any]:
    speech = _speech()
    reps = max(1, int(np.ceil(seconds * RATE / len(speech))))
    sent = np.tile(speech, reps)[: int(seconds * RATE)]
    track = TimedTrack(sent)
    with WebRtcEchoServer(echo_rate=echo_rate) as server:
        async with connect(server, track) as client:
            got = await client.samples_until(len(sent) + RATE // 2, timeout=seconds + 20)
        server_ms = np.array(server.latencies_ms())
    # Align the echo with the question (codec and resampler delays), then
    # match each sent frame with the received frame its samples came back in.
    _, lag = _best_alignment(sent[: RATE * 2], got[: RATE * 4], RATE)
    bounds = np.cumsum([len(a) for a in client.audio])
    rtt = []
    for j, t_sent in enumerate(track.sent_at[: len(sent) // FRAME]):
        k = int(np.searchsorted(bounds, j * FRAME + FRAME - 1 + lag, side="right"))
        if k < len(client.audio_times):
            rtt.append((client.audio_times[k] - t_sent) * 1000)
    rtt_ms = np.array(rtt)
    s50, s99 = np.percentile(server_ms, [50, 99])
    c50, c99 = np.percentile(rtt_ms, [50, 99])
    return {
        "echo_rate": echo_rate,
        "frames": len(server_ms),
        "server_in_out_p50_ms": round(float(s50), 3),
        "server_in_out_p99_ms": round(float(s99), 3),
        "client_round_trip_p50_ms": round(float(c50), 2),
        "client_round_trip_p99_ms": round(float(c99), 2),
        "server_share_of_round_trip_p50": round(float(s50 / c50), 4),
        "codec_and_resampler_delay_ms": round(lag * 1000 / RATE, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="question audio to echo per rate")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    results = [asyncio.run(run(rate, args.seconds)) for rate in (48000, 24000)]
    for r in results:
        print(
            f"echo at {r['echo_rate']} Hz, {r['frames']} frames: server in->out "
            f"p50 {r['server_in_out_p50_ms']:.2f} ms, p99 {r['server_in_out_p99_ms']:.2f} ms; "
            f"client round trip p50 {r['client_round_trip_p50_ms']:.1f} ms, "
            f"p99 {r['client_round_trip_p99_ms']:.1f} ms "
            f"(server share {100 * r['server_share_of_round_trip_p50']:.1f}%); "
            f"codec+resampler delay {r['codec_and_resampler_delay_ms']:.1f} ms"
        )
    if args.json:
        args.json.write_text(json.dumps({"transport": "webrtc", "echo": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
