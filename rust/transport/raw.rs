//! What the raw-audio transports share: their sessions, real-time pacing of
//! the answer, fixed-size PCM chunks, and one log line per turn.
//!
//! The socket and plain-WebSocket transports carry bare PCM16, with no way
//! (socket) or no obligation (WebSocket) for the client to stop playing
//! what it was sent. So the answer leaves at the pace it is played, at most
//! [`PACE_LEAD`] ahead: when the user barges in, what is still queued here is
//! dropped and the client's speaker falls silent within that lead.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audio::pcm::f32_to_pcm16;
use crate::audio::resample::{ResampleError, SUPPORTED_RATES};
use crate::engine::events::{EngineEvent, StopReason};
use crate::engine::{Engine, EngineError, Session};
use crate::protocol::SessionDefaults;

/// How far ahead of real time the answer's audio may be sent.
pub const PACE_LEAD: Duration = Duration::from_millis(300);

/// A session of a raw-audio transport: the server's settings (the command
/// line's), PCM at `input_rate` in and `output_rate` out, and input
/// transcription on, so each turn's words can be logged and forwarded.
pub(crate) fn open_session(
    engine: &Arc<Engine>,
    defaults: &SessionDefaults,
    input_rate: u32,
    output_rate: u32,
) -> Result<Session, EngineError> {
    let mut config = defaults.session_config();
    config.input_rate = input_rate;
    config.output_rate = output_rate;
    config.turn_detection = engine.has_vad();
    if config.transcription.is_none() {
        config.transcription = Some(config.stt.clone());
    }
    engine.create_session(config)
}

/// `rate` if the session's resamplers convert it, else why not.
pub fn check_rate(rate: u32) -> Result<u32, ResampleError> {
    if SUPPORTED_RATES.contains(&rate) {
        Ok(rate)
    } else {
        Err(ResampleError::UnsupportedRate { rate })
    }
}

/// Log what a listener of the conversation would want to read: both sides'
/// words, how each answer ended, and the session's errors.
pub(crate) fn log_event(session: &str, ev: &EngineEvent) {
    match ev {
        EngineEvent::InputTranscriptCompleted { transcript, .. } => {
            tracing::info!("{session} user: {transcript:?}");
        }
        EngineEvent::ContentPartDone { text, .. } => {
            tracing::info!("{session} assistant: {text:?}");
        }
        EngineEvent::ResponseDone {
            response_id,
            status,
            reason,
            error,
            ..
        } => {
            let why = reason.map_or("", StopReason::as_str);
            let error = error.as_deref().unwrap_or("");
            tracing::info!(
                "{session} response {response_id} {} {why} {error}",
                status.as_str()
            );
        }
        EngineEvent::Error { code, message, .. } => {
            tracing::warn!("{session} error {code}: {message}");
        }
        _ => {}
    }
}

/// Real-time pacing of one stream of outgoing audio.
#[derive(Debug)]
pub(crate) struct Pacer {
    rate: f64,
    lead: Duration,
    /// When the current stretch of audio began playing at the client.
    start: Option<Instant>,
    /// Samples sent since `start`.
    sent: u64,
}

impl Pacer {
    pub(crate) fn new(rate: u32, lead: Duration) -> Self {
        Self {
            rate: f64::from(rate),
            lead,
            start: None,
            sent: 0,
        }
    }

    /// When more audio may go: now, or `lead` before what was sent has played.
    pub(crate) fn ready_at(&mut self, now: Instant) -> Instant {
        let played_until = self
            .start
            .map(|s| s + Duration::from_secs_f64(self.sent as f64 / self.rate));
        let Some(played_until) = played_until.filter(|&p| p > now) else {
            // The client ran dry (or nothing was sent yet): a new stretch
            // starts now.
            self.start = Some(now);
            self.sent = 0;
            return now;
        };
        played_until.checked_sub(self.lead).unwrap_or(now).max(now)
    }

    pub(crate) fn sent(&mut self, samples: usize) {
        self.sent += samples as u64;
    }

    /// Forget what was sent (barge-in): the next audio goes at once.
    pub(crate) fn reset(&mut self) {
        self.start = None;
        self.sent = 0;
    }
}

/// Something to send to a raw-audio client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Out {
    /// PCM16 bytes holding `samples` samples.
    Audio(Vec<u8>, usize),
    /// A JSON text message.
    Text(String),
}

/// The outgoing messages of one connection, in order, audio paced.
#[derive(Debug)]
pub(crate) struct Outgoing {
    queue: VecDeque<Out>,
    pacer: Pacer,
}

impl Outgoing {
    pub(crate) fn new(rate: u32) -> Self {
        Self {
            queue: VecDeque::new(),
            pacer: Pacer::new(rate, PACE_LEAD),
        }
    }

    pub(crate) fn push(&mut self, out: Out) {
        self.queue.push_back(out);
    }

    /// The user barged in: drop the audio not sent yet (text still goes);
    /// returns how many samples were dropped.
    pub(crate) fn barge_in(&mut self) -> usize {
        let mut dropped = 0;
        self.queue.retain(|o| match o {
            Out::Audio(_, n) => {
                dropped += n;
                false
            }
            Out::Text(_) => true,
        });
        self.pacer.reset();
        dropped
    }

    /// When the next message may go (`None`: nothing queued).
    pub(crate) fn deadline(&mut self, now: Instant) -> Option<Instant> {
        match self.queue.front()? {
            Out::Text(_) => Some(now),
            Out::Audio(..) => Some(self.pacer.ready_at(now)),
        }
    }

    /// The next message if it may go now.
    pub(crate) fn pop_ready(&mut self, now: Instant) -> Option<Out> {
        if self.deadline(now)? > now {
            return None;
        }
        let out = self.queue.pop_front()?;
        if let Out::Audio(_, n) = &out {
            self.pacer.sent(*n);
        }
        Some(out)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Cuts audio into PCM16 chunks of exactly `chunk` samples (the socket
/// protocol's `list_play_chunk_size`).
#[derive(Debug)]
pub(crate) struct Chunker {
    chunk: usize,
    buf: Vec<f32>,
}

impl Chunker {
    pub(crate) fn new(chunk: usize) -> Self {
        Self {
            chunk: chunk.max(1),
            buf: Vec::with_capacity(chunk.max(1)),
        }
    }

    /// Add samples; every whole chunk goes to `out`.
    pub(crate) fn push(&mut self, mut samples: &[f32], out: &mut Outgoing) {
        while !samples.is_empty() {
            let take = (self.chunk - self.buf.len()).min(samples.len());
            self.buf.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.buf.len() == self.chunk {
                out.push(Out::Audio(f32_to_pcm16(&self.buf), self.chunk));
                self.buf.clear();
            }
        }
    }

    /// The answer ended: a partial chunk is padded with silence and sent,
    /// so a client reading whole chunks plays the answer's last words.
    pub(crate) fn flush(&mut self, out: &mut Outgoing) {
        if !self.buf.is_empty() {
            self.buf.resize(self.chunk, 0.0);
            out.push(Out::Audio(f32_to_pcm16(&self.buf), self.chunk));
            self.buf.clear();
        }
    }

    /// Drop a partial chunk (barge-in).
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
    }
}

/// PCM16 bytes arriving in pieces of any length (a TCP stream): whole
/// samples out, an odd byte kept for the next piece.
#[derive(Debug, Default)]
pub(crate) struct Pcm16Stream {
    odd: Option<u8>,
    samples: Vec<f32>,
}

impl Pcm16Stream {
    /// The whole samples `bytes` completes.
    pub(crate) fn decode(&mut self, mut bytes: &[u8]) -> &[f32] {
        self.samples.clear();
        if let (Some(lo), Some(&hi)) = (self.odd, bytes.first()) {
            self.samples
                .push(f32::from(i16::from_le_bytes([lo, hi])) / 32768.0);
            self.odd = None;
            bytes = &bytes[1..];
        }
        let pairs = bytes.chunks_exact(2);
        if let [last] = pairs.remainder() {
            self.odd = Some(*last);
        }
        self.samples
            .extend(pairs.map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0));
        &self.samples
    }

    /// Whether half a sample is left over.
    pub(crate) fn has_odd_byte(&self) -> bool {
        self.odd.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_lets_the_first_lead_go_at_once_then_follows_real_time() {
        let t0 = Instant::now();
        let mut out = Outgoing::new(16_000);
        // 100 ms chunks: 1600 samples.
        for _ in 0..10 {
            out.push(Out::Audio(vec![0; 3200], 1600));
        }
        out.push(Out::Text("done".into()));
        let mut sent = 0;
        while out.pop_ready(t0).is_some() {
            sent += 1;
        }
        // 300 ms of lead: the chunks ending at 0.1, 0.2, 0.3 and 0.4 s may go
        // (the fourth starts at 0.3 s, lead before it ends).
        assert_eq!(sent, 4);
        assert_eq!(
            out.deadline(t0),
            Some(t0 + Duration::from_millis(100)),
            "the next chunk waits until 100 ms have played"
        );
        let later = t0 + Duration::from_millis(100);
        assert!(out.pop_ready(later).is_some());
        assert!(out.pop_ready(later).is_none());
        // Barge-in drops the audio but keeps the text, in order.
        assert_eq!(out.barge_in(), 5 * 1600);
        assert_eq!(out.pop_ready(later), Some(Out::Text("done".into())));
        assert!(out.is_empty());
        // After barge-in the next answer starts at once.
        out.push(Out::Audio(vec![0; 3200], 1600));
        assert!(out.pop_ready(later).is_some());
    }

    #[test]
    fn a_client_that_ran_dry_starts_a_new_stretch() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(1000, Duration::from_millis(100));
        assert_eq!(pacer.ready_at(t0), t0);
        pacer.sent(1000); // one second
        assert_eq!(pacer.ready_at(t0), t0 + Duration::from_millis(900));
        let t5 = t0 + Duration::from_secs(5);
        assert_eq!(pacer.ready_at(t5), t5);
        pacer.sent(500);
        assert_eq!(pacer.ready_at(t5), t5 + Duration::from_millis(400));
    }

    #[test]
    fn chunks_are_exact_and_the_last_is_padded() {
        let mut out = Outgoing::new(16_000);
        let mut c = Chunker::new(4);
        c.push(&[0.5; 3], &mut out);
        assert!(out.is_empty());
        c.push(&[0.5; 6], &mut out);
        c.flush(&mut out);
        let mut chunks = Vec::new();
        while let Some(Out::Audio(bytes, n)) = out.queue.pop_front() {
            assert_eq!((bytes.len(), n), (8, 4));
            chunks.push(bytes);
        }
        assert_eq!(chunks.len(), 3);
        // 9 samples: the third chunk is one sample and three of silence.
        assert_eq!(chunks[2][2..], [0u8; 6]);
        assert_ne!(chunks[2][..2], [0u8; 2]);
    }

    #[test]
    fn pcm_split_anywhere_decodes_the_same_samples() {
        let samples: Vec<i16> = vec![1, -2, 300, -32768, 32767];
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        for cut in 0..bytes.len() {
            let mut s = Pcm16Stream::default();
            let mut got: Vec<f32> = s.decode(&bytes[..cut]).to_vec();
            assert_eq!(s.has_odd_byte(), cut % 2 == 1);
            got.extend_from_slice(s.decode(&bytes[cut..]));
            let want: Vec<f32> = samples.iter().map(|&v| f32::from(v) / 32768.0).collect();
            assert_eq!(got, want, "cut at {cut}");
            assert!(!s.has_odd_byte());
        }
        assert_eq!(check_rate(16_000), Ok(16_000));
        assert!(check_rate(11_025).is_err());
    }
}
