//! A WebRTC call run as a Realtime session: the call's track and `oai-events` channel on one side, a [`RealtimeSession`] on the other.
//!
//! One tokio task per call, like one per WebSocket connection: it selects
//! between the call's events (decoded 48 kHz audio fed to the session,
//! client events applied to it) and the session's events (answer audio to
//! the track, everything else to the data channel). Over WebRTC the answer's
//! audio is not sent as `response.output_audio.delta` events; the server
//! owns playback instead, as `OpenAI` does:
//!
//! * `output_audio_buffer.started` when a response's first audio frame goes
//!   out on the track, `.stopped` when its audio has all gone out and the
//!   response is done;
//! * barge-in (speech while audio plays, with `interrupt_response`) and the
//!   client's `output_audio_buffer.clear` drop the queued audio at once,
//!   answered with `output_audio_buffer.cleared`, and the assistant item is
//!   truncated to the audio that went out (`conversation.item.truncated`), so
//!   the model does not believe the user heard the rest.
//!
//! The turn timings extension (`?timings=1`) counts the first audio as out
//! when its first frame left the server, not when the engine produced it.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::session_task::{CloseOnDrop, sleep_until};
use crate::protocol::{Outgoing, RealtimeSession};
use crate::transport::webrtc::{Call, CallEvent, CallHandle, SAMPLE_RATE};

/// Events drained from the session per wake-up before the call is looked at again.
const DRAIN_BATCH: usize = 512;

/// One response's audio on the track.
#[derive(Debug)]
struct Playback {
    response_id: String,
    item_id: String,
    /// Samples queued for the track (at [`SAMPLE_RATE`]).
    pushed: u64,
    /// The mark of its first audio: its frame going out starts the playback.
    mark: Instant,
    /// `output_audio_buffer.started` was sent.
    started: bool,
    /// `response.done` was seen: no more audio will come.
    done: bool,
    /// The track ran out of audio after this playback's last samples.
    idle: bool,
}

/// The call side of the session: what is playing and what to announce.
struct Bridge {
    rt: RealtimeSession,
    call: CallHandle,
    /// The client opened no `oai-events` channel: events are not sent.
    silent: bool,
    /// Oldest first; the front one is playing (or about to).
    playing: VecDeque<Playback>,
    /// Responses whose audio was cleared: their late audio is dropped.
    cleared: HashSet<String>,
    /// The last response that had audio (named by `.cleared` when nothing plays).
    last_response: Option<String>,
    /// The time from the engine's first audio to its frame on the wire, per response.
    first_frame_delay: Vec<(String, f64)>,
    /// The call ended (or cannot be sent on any more).
    ended: bool,
}

/// Serve `call` with `rt` until either side ends; `created` is its
/// `session.created`. `silent`: the offer has no data channel.
pub(crate) async fn serve_call(
    rt: RealtimeSession,
    created: Value,
    call: Call,
    silent: bool,
    cancel: CancellationToken,
) {
    let Call { handle, mut events } = call;
    let session = rt.session().clone();
    let _closer = CloseOnDrop(session.clone());
    let notify = Arc::new(Notify::new());
    let waker = Arc::clone(&notify);
    session.set_notify(Box::new(move || waker.notify_one()));
    let mut bridge = Bridge {
        rt,
        call: handle,
        silent,
        playing: VecDeque::new(),
        cleared: HashSet::new(),
        last_response: None,
        first_frame_delay: Vec::new(),
        ended: false,
    };
    bridge.send(&created);
    bridge.flush(&notify);
    while !bridge.ended {
        let idle = bridge.rt.idle_deadline();
        tokio::select! {
            () = cancel.cancelled() => {
                let _ = bridge.call.hang_up();
                break;
            }
            ev = events.recv() => match ev {
                None | Some(CallEvent::Closed(_)) => break,
                Some(ev) => {
                    bridge.call_event(ev);
                    bridge.flush(&notify);
                }
            },
            () = notify.notified() => {
                bridge.flush(&notify);
                if bridge.rt.session().overflowed() {
                    let ev = bridge.rt.error_event(
                        "server_error",
                        "event_queue_overflow",
                        "The session's events backed up; ending the call.",
                    );
                    bridge.send(&ev);
                    let _ = bridge.call.hang_up();
                    break;
                }
            }
            () = sleep_until(idle) => {
                bridge.rt.on_idle();
                bridge.flush(&notify);
            }
        }
    }
    session.close();
}

impl Bridge {
    fn send(&mut self, ev: &Value) {
        if self.silent {
            return;
        }
        if self.call.send_text(ev.to_string()).is_err() {
            self.ended = true;
        }
    }

    fn announce(&mut self, kind: &str, response_id: &str) {
        let ev = self
            .rt
            .transport_event(kind, json!({ "response_id": response_id }));
        self.send(&ev);
    }

    fn call_event(&mut self, ev: CallEvent) {
        match ev {
            CallEvent::Audio(frame) => {
                if let Err(e) = self.rt.session().feed_audio(&frame.samples) {
                    let ev = self
                        .rt
                        .error_event("server_error", "audio_error", &e.to_string());
                    self.send(&ev);
                }
            }
            CallEvent::Message(text) => {
                self.rt.on_text(&text);
                if self.rt.take_clear_request() {
                    self.clear();
                }
            }
            CallEvent::InvalidMessage(reason) => {
                let ev = self
                    .rt
                    .error_event("invalid_request_error", "invalid_json", &reason);
                self.send(&ev);
            }
            CallEvent::ChannelOpen => self.silent = false,
            CallEvent::ChannelClosed => self.silent = true,
            CallEvent::MarkSent { origin, sent } => self.first_frame_sent(origin, sent),
            CallEvent::OutputStarted => {
                if let Some(p) = self.playing.back_mut() {
                    p.idle = false;
                }
            }
            CallEvent::OutputStopped => self.ran_dry(),
            CallEvent::OutputCleared { dropped_samples } => self.was_cleared(dropped_samples),
            _ => {}
        }
    }

    /// Send the session's pending events and audio.
    fn flush(&mut self, notify: &Notify) {
        let mut out = Vec::new();
        if self.rt.drain_media(&mut out, DRAIN_BATCH) {
            // More may be queued: come back after looking at the call.
            notify.notify_one();
        }
        for item in out {
            match item {
                Outgoing::Audio {
                    response_id,
                    item_id,
                    samples,
                } => self.audio(response_id, item_id, samples),
                Outgoing::Event(mut ev) => {
                    self.patch_timings(&mut ev);
                    self.send(&ev);
                    self.observe(&ev);
                }
            }
        }
    }

    fn audio(&mut self, response_id: String, item_id: String, samples: Vec<f32>) {
        if self.cleared.contains(&response_id) {
            return;
        }
        let n = samples.len() as u64;
        let sent = match self.playing.back_mut() {
            Some(p) if p.response_id == response_id => {
                p.pushed += n;
                p.idle = false;
                self.call.send_audio(samples, SAMPLE_RATE)
            }
            _ => {
                let mark = Instant::now();
                self.cleared.clear();
                self.last_response = Some(response_id.clone());
                self.playing.push_back(Playback {
                    response_id,
                    item_id,
                    pushed: n,
                    mark,
                    started: false,
                    done: false,
                    idle: false,
                });
                self.call.send_audio_marked(samples, SAMPLE_RATE, mark)
            }
        };
        if sent.is_err() {
            self.ended = true;
        }
    }

    /// Look at an event that went out: the ones that change playback.
    fn observe(&mut self, ev: &Value) {
        match ev["type"].as_str() {
            Some("response.done") => {
                let id = ev["response"]["id"].as_str().unwrap_or_default().to_owned();
                self.response_done(&id);
            }
            Some("input_audio_buffer.speech_started")
                if self.rt.interrupts() && !self.playing.is_empty() =>
            {
                // Barge-in: the user talks over the answer.
                self.clear();
            }
            _ => {}
        }
    }

    /// The turn timings (`?timings=1`): the first audio is out when its
    /// frame left, which the engine does not know.
    fn patch_timings(&mut self, ev: &mut Value) {
        if ev["type"] != "speech_to_speech.turn.timings" {
            return;
        }
        let id = ev["response_id"].as_str().unwrap_or_default().to_owned();
        let delay = self
            .first_frame_delay
            .iter()
            .find(|(r, _)| *r == id)
            .map(|(_, d)| *d);
        let t = &mut ev["timings"]["first_audio_out_ms"];
        if let (Some(delay), Some(at)) = (delay, t.as_f64()) {
            *t = json!(((at + delay) * 10.0).round() / 10.0);
        }
        self.first_frame_delay.retain(|(r, _)| *r != id);
    }

    /// A response's first frame went out: the ones before it have finished.
    fn first_frame_sent(&mut self, origin: Instant, sent: Instant) {
        let Some(at) = self.playing.iter().position(|p| p.mark == origin) else {
            return;
        };
        for p in self.playing.drain(..at).collect::<Vec<_>>() {
            if p.started {
                self.announce("output_audio_buffer.stopped", &p.response_id);
            }
        }
        let id = self.playing[0].response_id.clone();
        self.playing[0].started = true;
        let delay_ms = sent.saturating_duration_since(origin).as_secs_f64() * 1000.0;
        self.first_frame_delay.push((id.clone(), delay_ms));
        if self.first_frame_delay.len() > 8 {
            self.first_frame_delay.remove(0);
        }
        tracing::debug!(response = %id, delay_ms, "first answer frame sent");
        self.announce("output_audio_buffer.started", &id);
    }

    /// The track has no audio left: the playbacks whose response is done are over.
    fn ran_dry(&mut self) {
        // A push the call task has not taken yet keeps the queue busy.
        if self.call.stats().output_queued_samples > 0 {
            return;
        }
        for p in &mut self.playing {
            p.idle = true;
        }
        self.finish_idle();
    }

    fn response_done(&mut self, response_id: &str) {
        if let Some(p) = self
            .playing
            .iter_mut()
            .find(|p| p.response_id == response_id)
        {
            p.done = true;
        }
        self.finish_idle();
    }

    /// Announce `.stopped` for the front playbacks that are done and played out.
    fn finish_idle(&mut self) {
        while let Some(p) = self.playing.front() {
            if !(p.done && p.idle) {
                break;
            }
            let (id, started) = (p.response_id.clone(), p.started);
            self.playing.pop_front();
            if started {
                self.announce("output_audio_buffer.stopped", &id);
            }
        }
    }

    /// Drop the track's queued audio now (answered by `OutputCleared`).
    fn clear(&mut self) {
        if self.call.clear_audio().is_err() {
            self.ended = true;
        }
    }

    /// The queued audio is gone: say so, and cut each assistant item to
    /// what went out.
    fn was_cleared(&mut self, dropped: u64) {
        let response_id = self
            .playing
            .front()
            .map(|p| p.response_id.clone())
            .or_else(|| self.last_response.clone())
            .unwrap_or_default();
        self.announce("output_audio_buffer.cleared", &response_id);
        // The newest audio was dropped first (the queue plays oldest first).
        let mut dropped_left = dropped;
        let mut cuts = Vec::new();
        for p in self.playing.iter().rev() {
            let lost = dropped_left.min(p.pushed);
            dropped_left -= lost;
            if lost > 0 {
                let played_ms = (p.pushed - lost) * 1000 / u64::from(SAMPLE_RATE);
                cuts.push((p.item_id.clone(), played_ms));
            }
        }
        for p in self.playing.drain(..) {
            self.cleared.insert(p.response_id);
        }
        for (item_id, ms) in cuts {
            // Cutting the item still being spoken also ends its response.
            if let Err(e) = self.rt.session().truncate_item(&item_id, 0, ms) {
                tracing::debug!(item = %item_id, "truncate after clear: {e}");
            }
        }
    }
}
