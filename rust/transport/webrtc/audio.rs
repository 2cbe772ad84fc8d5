//! A call's audio: Opus decoding with loss concealment in, resampling, queueing, real-time pacing and Opus encoding out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use opus::{Application, Channels};

use super::config::{FRAME_SAMPLES, SAMPLE_RATE};
use crate::audio::resample::{ResampleError, Resampler};

/// One outgoing frame's duration.
pub(crate) const FRAME: Duration = Duration::from_millis(20);
/// How far ahead of real time a frame may go out. Audio that arrives in
/// real time (an echo, a live source) then leaves as soon as it has a whole
/// frame, whatever its jitter or the phase of its frames; audio made faster
/// than real time (TTS) leads the receiver's playout by this much, which
/// its jitter buffer absorbs, and no more.
const SLACK: Duration = Duration::from_millis(40);
/// How long past its slot a frame waits for more audio before the burst
/// counts as over (`OutputStopped`): the samples held back so far (a
/// partial frame, the resampler's tail) go out, padded with silence. Audio
/// that comes within this continues the burst with contiguous timestamps,
/// so a receiver hears no gap for a late chunk.
const GRACE: Duration = Duration::from_millis(60);
/// How far behind its slots a burst may fall and still catch up by sending
/// the overdue frames at once. A burst held up longer (a stalled task)
/// starts its slots afresh: its listener has given those frames up.
const MAX_BEHIND: Duration = Duration::from_millis(200);
/// Largest Opus packet we produce; libopus needs at most 1275 bytes a frame.
const MAX_PACKET: usize = 1500;
/// Longest decode (120 ms at 48 kHz), the most one Opus packet holds.
const MAX_DECODE: usize = 5760;
/// Missing audio filled by Opus concealment; the rest of a gap is silence.
const MAX_CONCEAL: u64 = 5760;
/// Longest gap in the incoming timestamps filled in at all. A longer one is
/// a stall or a restarted stream, not lost packets: decoding resumes there.
const MAX_GAP: u64 = 2 * SAMPLE_RATE as u64;

/// The earliest a frame whose real-time slot is `slot` may go out.
fn early(slot: Instant) -> Instant {
    slot.checked_sub(SLACK).unwrap_or(slot)
}

/// Where the outgoing pacer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// No audio to send; the next audio starts a burst at once.
    Idle,
    /// In a burst: `slot` is when the next frame would play in real time
    /// (the burst's start plus the audio sent since). It goes out from
    /// `slot - SLACK` once a whole frame is queued. Frames that are late
    /// (a burst of input after a delay, a busy task) go out at once until
    /// the burst is back on its slots: late input adds no lasting latency.
    Sending { slot: Instant },
}

/// An encoded frame ready for the track.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub(crate) payload: &'a [u8],
    /// RTP media time, 48 kHz.
    pub(crate) media_time: u64,
    /// The first frame of a burst (after idle).
    pub(crate) start: bool,
    /// The earliest mark among the samples of this frame.
    pub(crate) mark: Option<Instant>,
}

/// What [`Outgoing::poll`] did.
#[derive(Debug)]
pub(crate) enum Tick<'a> {
    /// A frame to write now.
    Send(Frame<'a>),
    /// The burst is over: no audio came within the grace time.
    Stopped,
    /// Nothing to do yet.
    Wait,
}

/// Errors of the outgoing audio path.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OutError {
    #[error(transparent)]
    Resample(#[from] ResampleError),
    #[error("Opus encoder: {0}")]
    Opus(#[from] opus::Error),
}

/// The outgoing track: audio at any supported rate in, paced 20 ms Opus frames out.
pub(crate) struct Outgoing {
    encoder: opus::Encoder,
    packet: Vec<u8>,
    frame: Vec<f32>,
    resampler: Option<Resampler>,
    scratch: Vec<f32>,
    queue: VecDeque<f32>,
    max_queue: usize,
    /// (index in the queued stream, instant) of marked samples.
    marks: VecDeque<(u64, Instant)>,
    /// Samples ever queued and ever taken (sent or cleared).
    queued: u64,
    taken: u64,
    pace: Pace,
    /// The next frame starts a burst: its media time moves up to the wall
    /// clock, so that silence between bursts shows as a timestamp gap.
    burst_start: bool,
    /// When audio was last queued: a burst ends [`GRACE`] after its slot
    /// or after its last audio, whichever is later (a burst running behind
    /// its slots is not over because its queue is empty for a moment).
    last_push: Option<Instant>,
    /// Wall-clock zero of the media time, set by the first frame.
    epoch: Option<Instant>,
    next_media_time: u64,
    dropped: u64,
}

impl Outgoing {
    pub(crate) fn new(max_seconds: f64) -> Result<Self, OutError> {
        let encoder = opus::Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip)?;
        let max_queue = (max_seconds * f64::from(SAMPLE_RATE)) as usize;
        Ok(Self {
            encoder,
            packet: vec![0; MAX_PACKET],
            frame: vec![0.0; FRAME_SAMPLES],
            resampler: None,
            scratch: Vec::new(),
            // A second up front (192 kB); a long answer grows it.
            queue: VecDeque::with_capacity(max_queue.min(SAMPLE_RATE as usize)),
            max_queue,
            marks: VecDeque::new(),
            queued: 0,
            taken: 0,
            pace: Pace::Idle,
            burst_start: false,
            last_push: None,
            epoch: None,
            next_media_time: 0,
            dropped: 0,
        })
    }

    /// Queue `samples` at `rate` (resampled to 48 kHz). `mark` tags the
    /// first of them: the frame that carries it reports it. Audio beyond
    /// the queue's limit is dropped and counted.
    pub(crate) fn push(
        &mut self,
        samples: &[f32],
        rate: u32,
        mark: Option<Instant>,
        now: Instant,
    ) -> Result<(), OutError> {
        if self
            .resampler
            .as_ref()
            .is_none_or(|r| r.input_rate() != rate)
        {
            // A new rate: what the old resampler holds back belongs before it.
            self.flush_resampler()?;
            self.resampler = Some(Resampler::new(rate, SAMPLE_RATE)?);
        }
        if let Some(at) = mark {
            self.marks.push_back((self.queued, at));
        }
        self.last_push = Some(now);
        if let Some(resampler) = &mut self.resampler {
            let need = resampler.output_len(samples.len());
            if self.scratch.len() < need {
                self.scratch.resize(need, 0.0);
            }
            let n = resampler.process_into(samples, &mut self.scratch[..need])?;
            self.enqueue(n);
        }
        if self.pace == Pace::Idle && !self.queue.is_empty() {
            self.pace = Pace::Sending { slot: now };
            self.burst_start = true;
        }
        Ok(())
    }

    /// Move `scratch[..n]` into the queue, up to its limit.
    fn enqueue(&mut self, n: usize) {
        let room = self.max_queue.saturating_sub(self.queue.len());
        let keep = n.min(room);
        self.queue.extend(&self.scratch[..keep]);
        self.queued += keep as u64;
        self.dropped += (n - keep) as u64;
    }

    /// Queue what the resampler holds back (the end of the stream), then
    /// forget it: the next audio starts a fresh stream.
    fn flush_resampler(&mut self) -> Result<(), OutError> {
        if let Some(mut resampler) = self.resampler.take() {
            let need = resampler.flush_len();
            if self.scratch.len() < need {
                self.scratch.resize(need, 0.0);
            }
            let n = resampler.flush_into(&mut self.scratch[..need])?;
            self.enqueue(n);
        }
        Ok(())
    }

    /// When [`Self::poll`] has something to do; `None` while idle.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.pace {
            Pace::Idle => None,
            Pace::Sending { slot } if self.queue.len() >= FRAME_SAMPLES => Some(early(slot)),
            Pace::Sending { slot } => Some(self.stop_after(slot)),
        }
    }

    /// When a burst whose next slot is `slot` is over if no whole frame comes.
    fn stop_after(&self, slot: Instant) -> Instant {
        self.last_push.map_or(slot, |p| p.max(slot)) + GRACE
    }

    /// Send the frame that is due, or end a burst whose audio ran out.
    pub(crate) fn poll(&mut self, now: Instant) -> Result<Tick<'_>, OutError> {
        let Pace::Sending { slot } = self.pace else {
            return Ok(Tick::Wait);
        };
        let whole = self.queue.len() >= FRAME_SAMPLES;
        if whole && now < early(slot) || !whole && now < self.stop_after(slot) {
            return Ok(Tick::Wait);
        }
        if !whole {
            // The audio stopped coming: send what is held back, then stop.
            self.flush_resampler()?;
            if self.queue.is_empty() {
                self.pace = Pace::Idle;
                return Ok(Tick::Stopped);
            }
        }
        let behind = now.saturating_duration_since(slot);
        self.pace = Pace::Sending {
            slot: if behind > MAX_BEHIND { now } else { slot } + FRAME,
        };
        let start = std::mem::take(&mut self.burst_start);
        self.encode_frame(now, start).map(Tick::Send)
    }

    fn encode_frame(&mut self, now: Instant, start: bool) -> Result<Frame<'_>, OutError> {
        let n = self.queue.len().min(FRAME_SAMPLES);
        for (dst, src) in self.frame.iter_mut().zip(self.queue.drain(..n)) {
            *dst = src;
        }
        self.frame[n..].fill(0.0);
        self.taken += n as u64;
        let end = self.taken;
        let mut mark = None;
        while let Some(&(at, origin)) = self.marks.front() {
            if at >= end {
                break;
            }
            mark = Some(mark.map_or(origin, |m: Instant| m.min(origin)));
            self.marks.pop_front();
        }
        let epoch = *self.epoch.get_or_insert(now);
        if start {
            let wall = (now.duration_since(epoch).as_micros() * u128::from(SAMPLE_RATE) / 1_000_000)
                as u64;
            self.next_media_time = self.next_media_time.max(wall);
        }
        let media_time = self.next_media_time;
        self.next_media_time += FRAME_SAMPLES as u64;
        let len = self.encoder.encode_float(&self.frame, &mut self.packet)?;
        Ok(Frame {
            payload: &self.packet[..len],
            media_time,
            start,
            mark,
        })
    }

    /// Drop every queued sample at once; returns how many (48 kHz).
    pub(crate) fn clear(&mut self) -> u64 {
        let dropped = self.queue.len() as u64;
        self.taken += dropped;
        self.queue.clear();
        self.marks.clear();
        if let Some(r) = &mut self.resampler {
            r.reset();
        }
        self.pace = Pace::Idle;
        self.burst_start = false;
        dropped
    }

    /// Samples queued now (48 kHz).
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Samples dropped because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The incoming track: Opus packets in, 48 kHz mono f32 out, gaps concealed.
pub(crate) struct Incoming {
    decoder: opus::Decoder,
    buf: Vec<f32>,
    /// Media time (48 kHz) the next packet should start at.
    expected: Option<u64>,
    /// Packets libopus could not decode (skipped).
    pub(crate) errors: u64,
}

impl Incoming {
    pub(crate) fn new() -> Result<Self, opus::Error> {
        Ok(Self {
            decoder: opus::Decoder::new(SAMPLE_RATE, Channels::Mono)?,
            buf: vec![0.0; MAX_DECODE],
            expected: None,
            errors: 0,
        })
    }

    /// Decode one packet starting at `media_time` (48 kHz), first filling
    /// any gap before it; `emit(samples, concealed)` gets each piece.
    pub(crate) fn packet(
        &mut self,
        data: &[u8],
        media_time: u64,
        mut emit: impl FnMut(&[f32], bool),
    ) {
        if let Some(expected) = self.expected {
            if media_time < expected {
                if expected - media_time < MAX_GAP {
                    // Late or duplicate: its time has been played already.
                    return;
                }
                // The sender restarted its clock: follow it.
            } else if media_time - expected <= MAX_GAP {
                self.fill_gap(media_time - expected, &mut emit);
            }
        }
        match self.decoder.decode_float(data, &mut self.buf, false) {
            Ok(n) => {
                emit(&self.buf[..n], false);
                self.expected = Some(media_time + n as u64);
            }
            Err(e) => {
                self.errors += 1;
                tracing::debug!("undecodable Opus packet ({} bytes): {e}", data.len());
            }
        }
    }

    /// Conceal up to [`MAX_CONCEAL`] samples of a gap with Opus PLC, then
    /// silence for the rest, so that the stream keeps wall-clock time.
    fn fill_gap(&mut self, gap: u64, emit: &mut impl FnMut(&[f32], bool)) {
        let mut left = gap;
        let mut concealed = 0;
        // PLC works in multiples of 2.5 ms (120 samples at 48 kHz).
        while left >= 120 && concealed < MAX_CONCEAL {
            let want = left.min(MAX_CONCEAL - concealed).min(MAX_DECODE as u64);
            let want = (want - want % 120) as usize;
            if want == 0 {
                break;
            }
            match self.decoder.decode_float(&[], &mut self.buf[..want], false) {
                Ok(n) if n > 0 => {
                    emit(&self.buf[..n], true);
                    left -= n as u64;
                    concealed += n as u64;
                }
                _ => break,
            }
        }
        while left > 0 {
            let n = left.min(MAX_DECODE as u64) as usize;
            self.buf[..n].fill(0.0);
            emit(&self.buf[..n], true);
            left -= n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn tone(hz: f64, rate: u32, seconds: f64) -> Vec<f32> {
        let n = (seconds * f64::from(rate)) as usize;
        let step = std::f64::consts::TAU * hz / f64::from(rate);
        (0..n)
            .map(|i| (0.5 * (step * i as f64).sin()) as f32)
            .collect()
    }

    /// Poll at every deadline until idle, as the call task does (a deadline
    /// in the past fires at once): (send time, media time, start, mark) per
    /// frame, and the number of stops.
    /// A sent frame: when, its media time, whether it started a burst, its mark.
    type Sent = (Instant, u64, bool, Option<Instant>);

    fn run(out: &mut Outgoing, from: Instant) -> (Vec<Sent>, usize) {
        let mut frames = Vec::new();
        let mut stops = 0;
        let mut now = from;
        while let Some(t) = out.deadline() {
            now = now.max(t);
            match out.poll(now).unwrap() {
                Tick::Send(f) => {
                    assert!(!f.payload.is_empty());
                    frames.push((now, f.media_time, f.start, f.mark));
                }
                Tick::Stopped => stops += 1,
                Tick::Wait => panic!("nothing to do at the deadline"),
            }
        }
        (frames, stops)
    }

    #[test]
    fn paces_20ms_frames_in_real_time_then_stops() {
        let mut out = Outgoing::new(60.0).unwrap();
        let t0 = Instant::now();
        assert_eq!(out.deadline(), None);
        out.push(&tone(440.0, 24_000, 1.0), 24_000, None, t0)
            .unwrap();
        assert!(
            out.deadline().unwrap() <= t0,
            "a new burst goes out at once"
        );
        let (frames, stops) = run(&mut out, t0);
        // 1 s at 48 kHz is 50 frames; the last holds the resampler's tail.
        assert_eq!(frames.len(), 50);
        assert_eq!(stops, 1);
        for (k, (at, media, start, _)) in frames.iter().enumerate().take(49) {
            // SLACK lets the burst lead real time by two frames, no more.
            let slot = t0 + FRAME * k.saturating_sub(2) as u32;
            assert_eq!(*at, slot, "frame {k} paced");
            assert_eq!(*media, k as u64 * 960);
            assert_eq!(*start, k == 0);
        }
        // The tail waits for more audio until its slot's grace, then goes.
        assert_eq!(frames[49].0, t0 + FRAME * 49 + GRACE);
        assert_eq!(out.deadline(), None);
    }

    #[test]
    fn real_time_audio_leaves_on_arrival_whatever_its_phase() {
        let mut out = Outgoing::new(60.0).unwrap();
        let t0 = Instant::now();
        // Frames arriving every 20 ms, 7 ms after each slot, with jitter
        // and now and then two at once: each leaves as it comes.
        let mut arrivals: Vec<Instant> = (0..50u32).map(|k| t0 + FRAME * k + 7 * MS).collect();
        arrivals[10] += 4 * MS;
        arrivals[20] = arrivals[21];
        for (k, at) in arrivals.iter().enumerate() {
            out.push(&vec![0.1; 960], 48_000, Some(*at), *at).unwrap();
            let Tick::Send(f) = out.poll(*at).unwrap() else {
                panic!("frame {k} held back")
            };
            assert_eq!((f.mark, f.media_time), (Some(*at), k as u64 * 960));
        }
    }

    #[test]
    fn a_late_burst_of_input_adds_no_lasting_latency() {
        let mut out = Outgoing::new(60.0).unwrap();
        let t0 = Instant::now();
        // Real-time input, then 100 ms of nothing, then the five frames
        // held up all at once, then real time again (a client that stalled).
        let mut arrivals: Vec<Instant> = (0..40u32).map(|k| t0 + FRAME * k).collect();
        for at in &mut arrivals[10..15] {
            *at = t0 + FRAME * 14;
        }
        let mut waits = Vec::new();
        for at in arrivals {
            out.push(&vec![0.1; 960], 48_000, Some(at), at).unwrap();
            while out.deadline().is_some_and(|d| d <= at) {
                if let Tick::Send(f) = out.poll(at).unwrap() {
                    waits.push(at.duration_since(f.mark.unwrap()));
                }
            }
        }
        assert_eq!(waits.len(), 40, "every frame left on arrival: {waits:?}");
        assert!(waits.iter().all(Duration::is_zero), "{waits:?}");
    }

    #[test]
    fn late_audio_within_the_grace_continues_the_burst() {
        let mut out = Outgoing::new(60.0).unwrap();
        let t0 = Instant::now();
        out.push(&vec![0.1; 960], 48_000, None, t0).unwrap();
        let Tick::Send(f) = out.poll(t0).unwrap() else {
            panic!()
        };
        assert!(f.start);
        // Nothing by the next slot: the burst waits out its grace.
        assert_eq!(out.deadline(), Some(t0 + FRAME + GRACE));
        assert!(matches!(out.poll(t0 + FRAME).unwrap(), Tick::Wait));
        // A chunk 30 ms late goes out at once, contiguous in media time.
        let late = t0 + 50 * MS;
        out.push(&vec![0.1; 960], 48_000, None, late).unwrap();
        assert!(out.deadline().unwrap() <= late);
        let Tick::Send(f) = out.poll(late).unwrap() else {
            panic!()
        };
        assert!(!f.start);
        assert_eq!(f.media_time, 960);
        // The slots stay where real time puts them; the burst ends a grace
        // after its last audio.
        assert_eq!(out.deadline(), Some(late + GRACE));
    }

    #[test]
    fn a_new_burst_follows_the_wall_clock() {
        let mut out = Outgoing::new(60.0).unwrap();
        let t0 = Instant::now();
        out.push(&vec![0.1; 960], 48_000, None, t0).unwrap();
        let (frames, stops) = run(&mut out, t0);
        assert_eq!((frames.len(), stops), (1, 1));
        let t1 = t0 + Duration::from_secs(2);
        out.push(&vec![0.1; 960], 48_000, None, t1).unwrap();
        let Tick::Send(f) = out.poll(t1).unwrap() else {
            panic!()
        };
        assert!(f.start);
        assert_eq!(f.media_time, 2 * 48_000, "silence shows as a timestamp gap");
    }

    #[test]
    fn clear_drops_the_backlog_at_once() {
        let mut out = Outgoing::new(60.0).unwrap();
        let t0 = Instant::now();
        out.push(&vec![0.2; 48_000], 48_000, Some(t0), t0).unwrap();
        assert!(matches!(out.poll(t0).unwrap(), Tick::Send(_)));
        assert_eq!(out.clear(), 48_000 - 960);
        assert_eq!((out.deadline(), out.queued()), (None, 0));
        // The next audio starts a new burst.
        out.push(&vec![0.2; 960], 48_000, None, t0 + 5 * MS)
            .unwrap();
        let Tick::Send(f) = out.poll(t0 + 5 * MS).unwrap() else {
            panic!()
        };
        assert!(f.start);
    }

    #[test]
    fn marks_come_back_with_the_frame_that_carries_them() {
        let mut out = Outgoing::new(60.0).unwrap();
        let t0 = Instant::now();
        let (m1, m2) = (t0 + 3 * MS, t0 + MS);
        out.push(&vec![0.1; 960], 48_000, Some(m1), t0).unwrap();
        out.push(&vec![0.1; 480], 48_000, Some(m2), t0).unwrap();
        let (frames, _) = run(&mut out, t0);
        let marks: Vec<_> = frames.iter().map(|f| f.3).collect();
        assert_eq!(marks, vec![Some(m1), Some(m2)]);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let mut out = Outgoing::new(1.0).unwrap();
        let t0 = Instant::now();
        out.push(&vec![0.1; 96_000], 48_000, None, t0).unwrap();
        assert_eq!((out.queued(), out.dropped()), (48_000, 48_000));
    }

    #[test]
    fn a_held_up_pacer_catches_up_by_the_slack_only() {
        let mut out = Outgoing::new(60.0).unwrap();
        let t0 = Instant::now();
        out.push(&vec![0.1; 9600], 48_000, None, t0).unwrap();
        assert!(matches!(out.poll(t0).unwrap(), Tick::Send(_)));
        let late = t0 + Duration::from_millis(500);
        let mut sent = 0;
        while out.deadline().is_some_and(|d| d <= late) {
            assert!(matches!(out.poll(late).unwrap(), Tick::Send(_)));
            sent += 1;
        }
        assert_eq!(sent, 3, "no burst of every missed frame");
        assert_eq!(out.deadline(), Some(early(late + 3 * FRAME)));
    }

    #[test]
    fn unsupported_rates_are_refused() {
        let mut out = Outgoing::new(60.0).unwrap();
        let err = out
            .push(&[0.0; 10], 12_345, None, Instant::now())
            .unwrap_err();
        assert!(err.to_string().contains("12345"), "{err}");
    }

    /// Encoded frames decode back to the same tone (after Opus's delay).
    #[test]
    fn opus_round_trip_keeps_the_signal() {
        let mut out = Outgoing::new(60.0).unwrap();
        let mut inc = Incoming::new().unwrap();
        let t0 = Instant::now();
        let sent = tone(440.0, 48_000, 0.5);
        out.push(&sent, 48_000, None, t0).unwrap();
        let mut got = Vec::new();
        while let Some(t) = out.deadline() {
            if let Tick::Send(f) = out.poll(t).unwrap() {
                let (payload, time) = (f.payload.to_vec(), f.media_time);
                inc.packet(&payload, time, |s, concealed| {
                    assert!(!concealed);
                    got.extend_from_slice(s);
                });
            }
        }
        assert_eq!(got.len(), sent.len());
        // Best alignment over Opus's algorithmic delay (6.5 ms and less).
        let corr = (0..480)
            .map(|lag| {
                let n = sent.len() - 960;
                let (a, b) = (&sent[..n], &got[lag..lag + n]);
                let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                let na: f32 = a.iter().map(|x| x * x).sum();
                let nb: f32 = b.iter().map(|x| x * x).sum();
                dot / (na * nb).sqrt()
            })
            .fold(0.0f32, f32::max);
        assert!(corr > 0.95, "correlation {corr}");
    }

    #[test]
    fn gaps_are_concealed_and_late_packets_dropped() {
        let mut enc = opus::Encoder::new(48_000, Channels::Mono, Application::Voip).unwrap();
        let signal = tone(300.0, 48_000, 0.2);
        let packets: Vec<Vec<u8>> = signal
            .chunks(960)
            .map(|c| enc.encode_vec_float(c, 1500).unwrap())
            .collect();
        let mut inc = Incoming::new().unwrap();
        let mut pieces: Vec<(usize, bool)> = Vec::new();
        let mut feed = |inc: &mut Incoming, i: usize| {
            inc.packet(&packets[i], i as u64 * 960, |s, c| {
                pieces.push((s.len(), c));
            });
        };
        feed(&mut inc, 0);
        feed(&mut inc, 1);
        // Packet 2 is lost; 3 reveals the gap.
        feed(&mut inc, 3);
        // 2 arrives late: its time has passed.
        feed(&mut inc, 2);
        feed(&mut inc, 3);
        assert_eq!(
            pieces,
            vec![(960, false), (960, false), (960, true), (960, false)]
        );
        // A gap of 10 s is a restart, not loss: no fill.
        pieces.clear();
        inc.packet(&packets[4], 10 * 48_000, |s, c| pieces.push((s.len(), c)));
        assert_eq!(pieces, vec![(960, false)]);
        // A gap of 300 ms: 120 ms of concealment, then silence, in time.
        pieces.clear();
        inc.packet(&packets[5], 10 * 48_000 + 960 + 14_400, |s, c| {
            pieces.push((s.len(), c));
        });
        let filled: usize = pieces.iter().filter(|p| p.1).map(|p| p.0).sum();
        assert_eq!(filled, 14_400);
        assert_eq!(pieces.last(), Some(&(960, false)));
        // Garbage is counted, not fatal.
        inc.packet(&[0xff; 3], 11 * 48_000, |_, _| {});
        assert_eq!(inc.errors, 1);
    }
}
