//! One call: a tokio task that owns its str0m `Rtc`, its Opus codecs and its outgoing audio.
//!
//! The task waits for a datagram, a command from a [`CallHandle`], or the
//! next deadline (str0m's, the pacer's, the ICE timeouts'), makes exactly
//! one change to the `Rtc` and then drains its output (str0m's
//! single-mutation rule). Events reach the application through
//! [`CallEvents`]; nothing here blocks on the application.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use str0m::channel::{ChannelData, ChannelId};
use str0m::format::{Codec, PayloadParams};
use str0m::media::{Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::audio::{Incoming, Outgoing, Tick};
use super::config::{CallId, EVENTS_CHANNEL, WebRtcConfig};
use super::mux::{self, Datagram};
use crate::audio::resample::SUPPORTED_RATES;

/// Decoded incoming audio: 48 kHz mono.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioFrame {
    /// The samples, usually 960 (20 ms).
    pub samples: Vec<f32>,
    /// When the packet that carried them (or revealed the gap) arrived.
    pub arrival: Instant,
    /// Made up for lost packets (Opus concealment, then silence).
    pub concealed: bool,
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client hung up (DTLS close or SCTP shutdown).
    HangUp,
    /// Connectivity never came up, or was lost for longer than the timeout.
    IceFailed,
    /// [`CallHandle::hang_up`] (or every handle was dropped).
    Local,
    /// The endpoint is shutting down.
    Shutdown,
    /// The client stopped reading the data channel and its backlog passed
    /// [`WebRtcConfig::max_pending_text_bytes`].
    SlowClient,
    /// The WebRTC stack failed (its message says how).
    Error(String),
}

impl CloseReason {
    /// A stable name: `hang_up`, `ice_failed`, `local`, `shutdown`,
    /// `slow_client` or `error`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::HangUp => "hang_up",
            Self::IceFailed => "ice_failed",
            Self::Local => "local",
            Self::Shutdown => "shutdown",
            Self::SlowClient => "slow_client",
            Self::Error(_) => "error",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Error(e) => write!(f, "error: {e}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// What happens on a call, in order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CallEvent {
    /// ICE and DTLS are up: media can flow.
    Connected,
    /// The `oai-events` data channel opened; text sent before is delivered now.
    ChannelOpen,
    /// The `oai-events` data channel closed (the call itself may go on).
    ChannelClosed,
    /// A text message on `oai-events`.
    Message(String),
    /// A binary message on `oai-events` that is not UTF-8 text; the reason
    /// says so. The application should answer it with an `error` event.
    InvalidMessage(String),
    /// Decoded audio from the client.
    Audio(AudioFrame),
    /// The first frame of a burst of outgoing audio went out.
    OutputStarted,
    /// The outgoing audio ran out (the burst is over).
    OutputStopped,
    /// [`CallHandle::clear_audio`] dropped this many queued samples (48 kHz).
    OutputCleared {
        /// Samples dropped.
        dropped_samples: u64,
    },
    /// The frame holding audio sent with [`CallHandle::send_audio_marked`]
    /// went out: `sent - origin` is the time it took.
    MarkSent {
        /// The mark given with the audio.
        origin: Instant,
        /// When its frame was handed to the socket.
        sent: Instant,
    },
    /// The call is over; no event follows.
    Closed(CloseReason),
}

/// Errors from a [`CallHandle`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// The call has ended; nothing more can be sent on it.
    #[error("the call has ended")]
    Closed,
    /// A sample rate the resampler does not convert; convert to one of
    /// 8000, 16000, 22050, 24000, 44100 or 48000 Hz first.
    #[error("unsupported sample rate {0} Hz")]
    UnsupportedRate(u32),
}

/// Counters of one call, read at any time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Incoming audio frames delivered as [`CallEvent::Audio`].
    pub input_frames: u64,
    /// Incoming frames dropped because the application was not reading.
    pub input_dropped_frames: u64,
    /// Incoming packets libopus could not decode.
    pub input_decode_errors: u64,
    /// Outgoing audio frames sent.
    pub output_frames: u64,
    /// Outgoing samples (48 kHz) dropped because the queue was full.
    pub output_dropped_samples: u64,
    /// Outgoing samples (48 kHz) waiting now.
    pub output_queued_samples: u64,
    /// Datagrams the socket refused (send buffer full), lost like on the wire.
    pub send_failures: u64,
}

#[derive(Debug, Default)]
struct SharedStats {
    input_frames: AtomicU64,
    input_dropped_frames: AtomicU64,
    input_decode_errors: AtomicU64,
    output_frames: AtomicU64,
    output_dropped_samples: AtomicU64,
    output_queued_samples: AtomicU64,
    send_failures: AtomicU64,
    closed: AtomicBool,
}

enum Command {
    Audio {
        samples: Vec<f32>,
        rate: u32,
        mark: Option<Instant>,
    },
    Text(String),
    Clear,
    HangUp,
}

/// Sends audio and text on a call, clears its audio, hangs it up. Cheap to clone.
#[derive(Clone)]
pub struct CallHandle {
    id: CallId,
    tx: mpsc::UnboundedSender<Command>,
    stats: Arc<SharedStats>,
}

impl std::fmt::Debug for CallHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallHandle")
            .field("id", &self.id)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl CallHandle {
    /// The call's id.
    pub fn id(&self) -> &CallId {
        &self.id
    }

    /// Queue mono audio at `rate` for the track: resampled to 48 kHz,
    /// Opus-encoded in 20 ms frames and sent in real time.
    pub fn send_audio(&self, samples: Vec<f32>, rate: u32) -> Result<(), CallError> {
        self.audio(samples, rate, None)
    }

    /// [`Self::send_audio`], and report [`CallEvent::MarkSent`] with `origin`
    /// when the frame holding the first of these samples goes out.
    pub fn send_audio_marked(
        &self,
        samples: Vec<f32>,
        rate: u32,
        origin: Instant,
    ) -> Result<(), CallError> {
        self.audio(samples, rate, Some(origin))
    }

    fn audio(&self, samples: Vec<f32>, rate: u32, mark: Option<Instant>) -> Result<(), CallError> {
        if !SUPPORTED_RATES.contains(&rate) {
            return Err(CallError::UnsupportedRate(rate));
        }
        self.send(Command::Audio {
            samples,
            rate,
            mark,
        })
    }

    /// Send a text message on `oai-events` (held until the channel opens).
    pub fn send_text(&self, text: String) -> Result<(), CallError> {
        self.send(Command::Text(text))
    }

    /// Drop every outgoing sample not yet sent, at once
    /// (`output_audio_buffer.clear`, barge-in); answered by
    /// [`CallEvent::OutputCleared`].
    pub fn clear_audio(&self) -> Result<(), CallError> {
        self.send(Command::Clear)
    }

    /// End the call (the client sees the DTLS close); answered by
    /// [`CallEvent::Closed`] with [`CloseReason::Local`].
    pub fn hang_up(&self) -> Result<(), CallError> {
        self.send(Command::HangUp)
    }

    /// Whether the call has ended.
    pub fn is_closed(&self) -> bool {
        self.stats.closed.load(Ordering::Acquire) || self.tx.is_closed()
    }

    /// The call's counters now.
    pub fn stats(&self) -> CallStats {
        let s = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CallStats {
            input_frames: get(&s.input_frames),
            input_dropped_frames: get(&s.input_dropped_frames),
            input_decode_errors: get(&s.input_decode_errors),
            output_frames: get(&s.output_frames),
            output_dropped_samples: get(&s.output_dropped_samples),
            output_queued_samples: get(&s.output_queued_samples),
            send_failures: get(&s.send_failures),
        }
    }

    fn send(&self, cmd: Command) -> Result<(), CallError> {
        self.tx.send(cmd).map_err(|_| CallError::Closed)
    }
}

/// A call's events, in order, ending with [`CallEvent::Closed`].
#[derive(Debug)]
pub struct CallEvents {
    rx: mpsc::UnboundedReceiver<CallEvent>,
    pending_audio: Arc<AtomicUsize>,
}

impl CallEvents {
    /// The next event; `None` after [`CallEvent::Closed`] was taken.
    pub async fn recv(&mut self) -> Option<CallEvent> {
        let ev = self.rx.recv().await;
        self.taken(ev.as_ref());
        ev
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<CallEvent> {
        let ev = self.rx.try_recv().ok();
        self.taken(ev.as_ref());
        ev
    }

    /// The next event, waiting on this (non-async) thread.
    pub fn blocking_recv(&mut self) -> Option<CallEvent> {
        let ev = self.rx.blocking_recv();
        self.taken(ev.as_ref());
        ev
    }

    fn taken(&self, ev: Option<&CallEvent>) {
        if let Some(CallEvent::Audio(_)) = ev {
            self.pending_audio.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// An answered call: its handle and its events.
#[derive(Debug)]
pub struct Call {
    /// Send audio and text, clear, hang up.
    pub handle: CallHandle,
    /// What happens on the call.
    pub events: CallEvents,
}

impl Call {
    /// The call's id.
    pub fn id(&self) -> &CallId {
        self.handle.id()
    }
}

/// What a call task needs.
pub(crate) struct Setup {
    pub(crate) id: CallId,
    pub(crate) rtc: Rtc,
    pub(crate) datagrams: mpsc::Receiver<Datagram>,
    pub(crate) sockets: Arc<[Arc<mux::Socket>]>,
    pub(crate) config: WebRtcConfig,
    pub(crate) cancel: CancellationToken,
    /// Runs once when the call ends (frees its routes and its slot).
    pub(crate) on_end: Box<dyn FnOnce() + Send>,
}

/// The call's public half and the task that runs it (to spawn).
pub(crate) fn start(setup: Setup) -> (Call, impl Future<Output = ()> + Send + 'static) {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let stats = Arc::new(SharedStats::default());
    let pending_audio = Arc::new(AtomicUsize::new(0));
    let call = Call {
        handle: CallHandle {
            id: setup.id.clone(),
            tx: cmd_tx,
            stats: Arc::clone(&stats),
        },
        events: CallEvents {
            rx: ev_rx,
            pending_audio: Arc::clone(&pending_audio),
        },
    };
    let task = async move {
        let Setup {
            id,
            rtc,
            datagrams,
            sockets,
            config,
            cancel,
            on_end,
        } = setup;
        let started = Instant::now();
        let reason = match (Incoming::new(), Outgoing::new(config.max_output_seconds)) {
            (Ok(incoming), Ok(outgoing)) => {
                let task = Task {
                    id: id.clone(),
                    rtc,
                    sockets,
                    config,
                    events: ev_tx.clone(),
                    pending_audio,
                    stats: Arc::clone(&stats),
                    audio: None,
                    channel: None,
                    pending_text: VecDeque::new(),
                    pending_text_bytes: 0,
                    incoming,
                    outgoing,
                    connected: false,
                    disconnected_since: None,
                    started,
                    closing: None,
                };
                // The task holds the whole `Rtc`: keep it on the heap.
                Box::pin(task.run(datagrams, cmd_rx, cancel)).await
            }
            (Err(e), _) => CloseReason::Error(format!("Opus decoder: {e}")),
            (_, Err(e)) => CloseReason::Error(e.to_string()),
        };
        stats.closed.store(true, Ordering::Release);
        on_end();
        tracing::info!(call = %id, reason = %reason, secs = started.elapsed().as_secs_f32(), "WebRTC call ended");
        let _ = ev_tx.send(CallEvent::Closed(reason));
    };
    (call, task)
}

struct Task {
    id: CallId,
    rtc: Rtc,
    sockets: Arc<[Arc<mux::Socket>]>,
    config: WebRtcConfig,
    events: mpsc::UnboundedSender<CallEvent>,
    pending_audio: Arc<AtomicUsize>,
    stats: Arc<SharedStats>,
    /// The audio section and the Opus payload type we send with.
    audio: Option<(Mid, Option<Pt>)>,
    channel: Option<ChannelId>,
    pending_text: VecDeque<String>,
    pending_text_bytes: usize,
    incoming: Incoming,
    outgoing: Outgoing,
    connected: bool,
    disconnected_since: Option<Instant>,
    started: Instant,
    /// Set by an event or a command: the call ends after this drain.
    closing: Option<CloseReason>,
}

impl Task {
    async fn run(
        mut self,
        mut datagrams: mpsc::Receiver<Datagram>,
        mut commands: mpsc::UnboundedReceiver<Command>,
        cancel: CancellationToken,
    ) -> CloseReason {
        loop {
            let rtc_due = match self.drain() {
                Ok(t) => t,
                Err(e) => return self.finish(CloseReason::Error(e)),
            };
            if let Some(reason) = self.closing.take() {
                return self.finish(reason);
            }
            // One change per drain: a waiting text message counts as one.
            if self.write_pending_text() {
                continue;
            }
            let due = [Some(rtc_due), self.pacer_due(), self.ice_due()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(rtc_due);
            tokio::select! {
                biased;
                () = cancel.cancelled() => return self.finish(CloseReason::Shutdown),
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    // Nobody can send on this call any more.
                    None => return self.finish(CloseReason::Local),
                },
                got = datagrams.recv() => match got {
                    Some(d) => self.receive(&d),
                    None => return self.finish(CloseReason::Shutdown),
                },
                () = tokio::time::sleep_until(due.into()) => self.tick(Instant::now()),
            }
        }
    }

    /// Close the `Rtc` (the client sees the DTLS `close_notify`) and send what
    /// that produces.
    fn finish(&mut self, reason: CloseReason) -> CloseReason {
        if self.rtc.is_alive() {
            if let Err(e) = self.rtc.close() {
                tracing::debug!(call = %self.id, "close: {e}");
            }
            if let Err(e) = self.drain() {
                tracing::debug!(call = %self.id, "drain on close: {e}");
            }
        }
        self.rtc.disconnect();
        reason
    }

    /// Handle str0m's output until it names its next deadline.
    fn drain(&mut self) -> Result<Instant, String> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => return Ok(t),
                Ok(Output::Transmit(t)) => self.transmit(&t),
                Ok(Output::Event(e)) => self.event(e),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn transmit(&self, t: &Transmit) {
        let sent = mux::socket_for(&self.sockets, t.source)
            .is_some_and(|s| s.udp.try_send_to(&t.contents, t.destination).is_ok());
        if !sent {
            self.stats.send_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn emit(&self, ev: CallEvent) {
        // The receiver may be gone (the application dropped the events);
        // the call still runs until hung up.
        let _ = self.events.send(ev);
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Connected => {
                self.connected = true;
                self.emit(CallEvent::Connected);
            }
            Event::IceConnectionStateChange(state) => {
                tracing::debug!(call = %self.id, ?state, "ICE state");
                match state {
                    IceConnectionState::Disconnected => {
                        self.disconnected_since.get_or_insert_with(Instant::now);
                    }
                    IceConnectionState::Connected | IceConnectionState::Completed => {
                        self.disconnected_since = None;
                    }
                    _ => {}
                }
            }
            Event::MediaAdded(m) if m.kind == MediaKind::Audio && self.audio.is_none() => {
                self.audio = Some((m.mid, None));
            }
            Event::MediaData(d) if self.audio.is_some_and(|(mid, _)| mid == d.mid) => {
                let time = d.time.rebase(Frequency::FORTY_EIGHT_KHZ).numer();
                self.decode(&d.data, time, d.network_time);
            }
            Event::ChannelOpen(id, label) => {
                if label == EVENTS_CHANNEL && self.channel.is_none() {
                    self.channel = Some(id);
                    if let Some(mut ch) = self.rtc.channel(id) {
                        ch.set_buffered_amount_low_threshold(64 * 1024);
                    }
                    self.emit(CallEvent::ChannelOpen);
                } else {
                    tracing::debug!(call = %self.id, label, "ignoring data channel");
                }
            }
            Event::ChannelData(data) => self.channel_data(data),
            Event::ChannelClose(id) if self.channel == Some(id) => {
                self.channel = None;
                self.emit(CallEvent::ChannelClosed);
            }
            Event::Closed => {
                self.closing.get_or_insert(CloseReason::HangUp);
            }
            _ => {}
        }
    }

    fn decode(&mut self, data: &[u8], media_time: u64, arrival: Instant) {
        let errors = self.incoming.errors;
        let Self {
            incoming,
            events,
            pending_audio,
            stats,
            config,
            ..
        } = self;
        incoming.packet(data, media_time, |samples, concealed| {
            if pending_audio.load(Ordering::Acquire) >= config.max_pending_input_frames {
                stats.input_dropped_frames.fetch_add(1, Ordering::Relaxed);
                return;
            }
            pending_audio.fetch_add(1, Ordering::AcqRel);
            let frame = AudioFrame {
                samples: samples.to_vec(),
                arrival,
                concealed,
            };
            if events.send(CallEvent::Audio(frame)).is_ok() {
                stats.input_frames.fetch_add(1, Ordering::Relaxed);
            } else {
                pending_audio.fetch_sub(1, Ordering::AcqRel);
            }
        });
        if self.incoming.errors != errors {
            self.stats
                .input_decode_errors
                .store(self.incoming.errors, Ordering::Relaxed);
        }
    }

    fn channel_data(&mut self, data: ChannelData) {
        if self.channel != Some(data.id) {
            return;
        }
        match String::from_utf8(data.data) {
            Ok(text) => self.emit(CallEvent::Message(text)),
            Err(e) => self.emit(CallEvent::InvalidMessage(format!(
                "a binary message of {} bytes that is not UTF-8 text: send the events as JSON text",
                e.as_bytes().len()
            ))),
        }
    }

    /// Datagram in: one change.
    fn receive(&mut self, d: &Datagram) {
        let input = match Receive::new(Protocol::Udp, d.source, d.destination, &d.data) {
            Ok(r) => Input::Receive(d.at, r),
            Err(e) => {
                tracing::trace!(call = %self.id, "unparseable datagram: {e}");
                return;
            }
        };
        if let Err(e) = self.rtc.handle_input(input) {
            // A bad packet must not end the call; str0m disconnects itself
            // when the error is fatal, and the next drain says so.
            tracing::debug!(call = %self.id, "input: {e}");
            if !self.rtc.is_alive() {
                self.closing
                    .get_or_insert(CloseReason::Error(e.to_string()));
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Audio {
                samples,
                rate,
                mark,
            } => {
                if let Err(e) = self.outgoing.push(&samples, rate, mark, Instant::now()) {
                    tracing::warn!(call = %self.id, "outgoing audio dropped: {e}");
                }
                self.output_stats();
            }
            Command::Text(text) => {
                self.pending_text_bytes += text.len();
                self.pending_text.push_back(text);
                if self.pending_text_bytes > self.config.max_pending_text_bytes {
                    self.closing.get_or_insert(CloseReason::SlowClient);
                }
            }
            Command::Clear => {
                let dropped_samples = self.outgoing.clear();
                self.output_stats();
                self.emit(CallEvent::OutputCleared { dropped_samples });
            }
            Command::HangUp => {
                self.closing.get_or_insert(CloseReason::Local);
            }
        }
    }

    /// Write the oldest waiting text message; `true` if that changed the
    /// `Rtc` (drain before anything else).
    fn write_pending_text(&mut self) -> bool {
        let Some(id) = self.channel else {
            return false;
        };
        let Some(text) = self.pending_text.front() else {
            return false;
        };
        let Some(mut ch) = self.rtc.channel(id) else {
            return false;
        };
        match ch.write(false, text.as_bytes()) {
            // Full: wait for ChannelBufferedAmountLow (or the next drain).
            Ok(false) => false,
            Ok(true) => {
                self.pop_text();
                true
            }
            Err(e) => {
                // Too large for the peer, or the channel is closing: the
                // message cannot be delivered; the call goes on.
                tracing::warn!(call = %self.id, bytes = text.len(), "data channel message dropped: {e}");
                self.pop_text();
                true
            }
        }
    }

    fn pop_text(&mut self) {
        if let Some(t) = self.pending_text.pop_front() {
            self.pending_text_bytes -= t.len();
        }
    }

    /// The pacer's next deadline, once media can flow.
    fn pacer_due(&self) -> Option<Instant> {
        if self.connected {
            self.outgoing.deadline()
        } else {
            None
        }
    }

    /// When the ICE timeouts end the call.
    fn ice_due(&self) -> Option<Instant> {
        if !self.connected {
            return Some(self.started + self.config.connect_timeout);
        }
        self.disconnected_since
            .map(|t| t + self.config.disconnect_timeout)
    }

    /// A deadline passed: one change.
    fn tick(&mut self, now: Instant) {
        if self.ice_due().is_some_and(|t| now >= t) {
            tracing::info!(call = %self.id, connected = self.connected, "ICE gave up");
            self.closing.get_or_insert(CloseReason::IceFailed);
            return;
        }
        if self.pacer_due().is_some_and(|t| now >= t) && self.send_frame(now) {
            return;
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!(call = %self.id, "timeout: {e}");
        }
    }

    /// Send the due audio frame; `true` if the `Rtc` changed.
    fn send_frame(&mut self, now: Instant) -> bool {
        let tick = match self.outgoing.poll(now) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(call = %self.id, "outgoing frame dropped: {e}");
                return false;
            }
        };
        let frame = match tick {
            Tick::Wait => return false,
            Tick::Stopped => {
                let _ = self.events.send(CallEvent::OutputStopped);
                return false;
            }
            Tick::Send(frame) => frame,
        };
        if frame.start {
            let _ = self.events.send(CallEvent::OutputStarted);
        }
        let mark = frame.mark;
        let mut changed = false;
        if let Some((mid, pt)) = &mut self.audio
            && let Some(writer) = self.rtc.writer(*mid)
        {
            if pt.is_none() {
                *pt = writer
                    .payload_params()
                    .find(|p| p.spec().codec == Codec::Opus)
                    .map(PayloadParams::pt);
            }
            if let Some(pt) = *pt {
                let time = MediaTime::new(frame.media_time, Frequency::FORTY_EIGHT_KHZ);
                match writer
                    .start_of_talkspurt(frame.start)
                    .write(pt, now, time, frame.payload)
                {
                    Ok(()) => {
                        changed = true;
                        self.stats.output_frames.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::debug!(call = %self.id, "audio write: {e}"),
                }
            }
        }
        // The client may not receive audio (a send-only offer): the frame
        // is paced and dropped all the same, so clear and marks still work.
        if let Some(origin) = mark {
            let _ = self.events.send(CallEvent::MarkSent { origin, sent: now });
        }
        self.output_stats();
        changed
    }

    fn output_stats(&self) {
        let s = &self.stats;
        s.output_dropped_samples
            .store(self.outgoing.dropped(), Ordering::Relaxed);
        s.output_queued_samples
            .store(self.outgoing.queued() as u64, Ordering::Relaxed);
    }
}
