//! The microphone and speaker ends that local mode, `talk` and `listen_and_play` share.
//!
//! [`Microphone`] reads the capture device in 20 ms frames at 16 kHz and
//! removes the speaker's echo with AEC3, whose far end is what the
//! [`Speaker`] actually played (its output's reference tap), so the agent's
//! own voice coming back through the room is not taken for the user barging
//! in. [`Speaker`] queues the answer's audio, knows which item is playing
//! and how much of it was heard, and stops at once on barge-in.
//!
//! Both run on plain threads of their own (device reads and writes block);
//! nothing here touches Python.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::audio::aec::{EchoCanceller, FarEndClock};
use crate::audio::device::{
    AudioInput, AudioOutput, DeviceError, ReferenceTap, StreamInfo, StreamOptions,
};
use crate::audio::resample::ResampleError;
use crate::engine::EngineError;

/// Rate of the microphone side: the echo canceller's and the VAD's.
pub const MIC_RATE: u32 = 16_000;

/// Start a named thread and keep its handle in `threads`.
pub(crate) fn spawn_into(
    threads: &mut Vec<std::thread::JoinHandle<()>>,
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<(), ModeError> {
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(ModeError::Thread)?;
    threads.push(handle);
    Ok(())
}
/// Samples in one microphone frame (20 ms).
const FRAME: usize = MIC_RATE as usize / 50;
/// How far the capture may run ahead of the echo reference, beyond its
/// usual band, before it counts as an output stall (30 ms).
const STALL_TOLERANCE: usize = MIC_RATE as usize * 3 / 100;
/// How long the microphone stays blocked after the speaker falls silent
/// (`--block_mic_during_playback`): the room's echo and the device latency.
const BLOCK_TAIL: Duration = Duration::from_millis(300);
/// How long after the speaker stalls the echo path counts as unsettled (in
/// microphone samples: 3 s). A stall can move the echo's delay as well as
/// stop it: through PulseAudio, AEC3's delay estimate fell by 20 to 30 ms
/// at each 150 ms suspension of the sink, and finding the new delay took up
/// to a second, with bursts of echo of up to 1.25 s coming through from
/// then (eight runs of the output-stall test in `tests/test_modes_pulse.py`).
const UNSETTLED: usize = MIC_RATE as usize * 3;

/// Errors from starting local mode or a client.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ModeError {
    /// A device could not be opened; the message says which and why.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The engine refused the session.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A rate the audio path cannot convert.
    #[error(transparent)]
    Rate(#[from] ResampleError),
    /// The server could not be reached or refused the connection.
    #[error("{0}")]
    Connect(String),
    /// A setting is out of range; the message names it.
    #[error("{0}")]
    InvalidConfig(String),
    /// A thread could not be started.
    #[error("could not start a thread: {0}")]
    Thread(std::io::Error),
}

/// A microphone: 20 ms frames at [`MIC_RATE`], echo removed.
pub(crate) struct Microphone {
    input: AudioInput,
    echo: Option<(EchoCanceller, ReferenceTap)>,
    raw: Vec<f32>,
    filled: usize,
    clean: Vec<f32>,
    /// Set while the speaker plays (`--block_mic_during_playback`): the
    /// frames are silence then.
    blocked_by: Option<Arc<AtomicBool>>,
    /// Keeps the echo reference in step when the speaker stalls.
    clock: FarEndClock,
}

impl Microphone {
    /// Open `device` (`None`: the default); with `reference`, cancel the
    /// speaker's echo; with `blocked_by`, send silence while it is set.
    pub(crate) fn open(
        device: Option<String>,
        reference: Option<ReferenceTap>,
        blocked_by: Option<Arc<AtomicBool>>,
    ) -> Result<Self, ModeError> {
        let input = AudioInput::open(&StreamOptions {
            device,
            ..StreamOptions::new(MIC_RATE)
        })?;
        let echo = match reference {
            Some(tap) => {
                let aec = EchoCanceller::new(MIC_RATE)
                    .map_err(|e| ModeError::InvalidConfig(e.to_string()))?;
                Some((aec, tap))
            }
            None => None,
        };
        Ok(Self {
            input,
            echo,
            raw: vec![0.0; FRAME],
            filled: 0,
            clean: vec![0.0; FRAME],
            blocked_by,
            clock: FarEndClock::new(MIC_RATE as usize, STALL_TOLERANCE),
        })
    }

    /// What was opened.
    pub(crate) fn info(&self) -> &StreamInfo {
        self.input.info()
    }

    /// The next 20 ms of capture, echo removed; `None` when `timeout`
    /// passed first. A failed device (unplugged, its server gone) is an error.
    pub(crate) fn next_frame(&mut self, timeout: Duration) -> Result<Option<&[f32]>, DeviceError> {
        self.filled += self
            .input
            .read(&mut self.raw[self.filled..], Some(timeout))?;
        if self.filled < FRAME {
            return Ok(None);
        }
        self.filled = 0;
        let cancelled = match self.echo.as_mut() {
            Some((aec, tap)) => {
                let got = tap.feed(aec)?;
                aec.push_far_end_silence(self.clock.gap(got, FRAME));
                if let Some(ms) = self.clock.take_stall_ms(MIC_RATE) {
                    tracing::info!(
                        "the speaker stalled for {ms} ms: the echo reference was kept in step"
                    );
                }
                aec.process_into(&self.raw, &mut self.clean).is_ok()
            }
            None => false,
        };
        if !cancelled {
            self.clean.copy_from_slice(&self.raw);
        }
        if self
            .blocked_by
            .as_ref()
            .is_some_and(|b| b.load(Ordering::Acquire))
        {
            self.clean.fill(0.0);
        }
        Ok(Some(&self.clean))
    }

    /// Whether the speaker stalled in the last three seconds: the echo
    /// canceller may still be looking for the echo's new delay.
    pub(crate) fn echo_unsettled(&self) -> bool {
        self.clock.since_stall().is_some_and(|n| n < UNSETTLED)
    }

    /// Stop capturing.
    pub(crate) fn close(&mut self) {
        self.input.close();
    }
}

/// The item being played and where it starts among the samples queued.
#[derive(Debug)]
struct Playing {
    item_id: String,
    start: u64,
    len: u64,
}

/// A speaker that plays the answer and stops it on barge-in.
pub(crate) struct Speaker {
    out: AudioOutput,
    rate: u32,
    pending: VecDeque<f32>,
    /// Samples handed to the device so far (after a barge-in: what it played).
    written: u64,
    item: Option<Playing>,
    finishing: bool,
    speaking: Arc<AtomicBool>,
    quiet_since: Option<Instant>,
}

impl Speaker {
    /// Open `device` for mono audio at `rate`; with `reference_rate`, also
    /// the tap of what it plays, for a [`Microphone`]'s echo canceller.
    pub(crate) fn open(
        device: Option<String>,
        rate: u32,
        reference_rate: Option<u32>,
    ) -> Result<(Self, Option<ReferenceTap>), ModeError> {
        let mut out = AudioOutput::open(
            &StreamOptions {
                device,
                ..StreamOptions::new(rate)
            },
            reference_rate.is_some(),
        )?;
        let tap = reference_rate.map(|r| out.take_reference(r)).transpose()?;
        let speaker = Self {
            out,
            rate,
            pending: VecDeque::new(),
            written: 0,
            item: None,
            finishing: false,
            speaking: Arc::new(AtomicBool::new(false)),
            quiet_since: None,
        };
        Ok((speaker, tap))
    }

    /// What was opened.
    pub(crate) fn info(&self) -> &StreamInfo {
        self.out.info()
    }

    /// Set while audio is playing (and [`BLOCK_TAIL`] after).
    pub(crate) fn speaking(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.speaking)
    }

    /// Queue audio of the assistant item `item_id`.
    pub(crate) fn play(&mut self, item_id: &str, samples: &[f32]) {
        let queued = self.written + self.pending.len() as u64;
        match self.item.as_mut() {
            Some(p) if p.item_id == item_id => p.len += samples.len() as u64,
            _ => {
                self.item = Some(Playing {
                    item_id: item_id.to_owned(),
                    start: queued,
                    len: samples.len() as u64,
                });
            }
        }
        self.pending.extend(samples);
        self.finishing = false;
    }

    /// The answer is complete: running dry after it is not an underrun.
    pub(crate) fn end_of_answer(&mut self) {
        self.finishing = true;
    }

    /// Whether audio is queued or playing.
    pub(crate) fn busy(&self) -> bool {
        !self.pending.is_empty() || self.out.queued() > 0
    }

    /// Barge-in: stop now. When an item was cut short, returns it and the
    /// milliseconds of it actually played.
    pub(crate) fn interrupt(&mut self) -> Option<(String, u64)> {
        let cut = self.busy();
        let played = self.out.played_samples();
        self.out.clear();
        self.pending.clear();
        self.finishing = false;
        // What was queued and not played is gone: count from what played.
        self.written = played;
        let item = self.item.take()?;
        if !cut {
            return None;
        }
        let heard = played.saturating_sub(item.start).min(item.len);
        Some((item.item_id, heard * 1000 / u64::from(self.rate)))
    }

    /// Move queued audio into the device (waiting at most a few ms for
    /// room) and keep the speaking flag; a failed device is an error.
    pub(crate) fn pump(&mut self) -> Result<(), DeviceError> {
        if self.pending.is_empty() {
            if self.finishing {
                self.out.finish(Some(Duration::from_millis(100)))?;
                self.finishing = false;
            }
        } else {
            let (head, _) = self.pending.as_slices();
            let n = self.out.write(head, Some(Duration::from_millis(5)))?;
            self.pending.drain(..n);
            self.written += n as u64;
        }
        let now = Instant::now();
        if self.busy() {
            self.quiet_since = None;
            self.speaking.store(true, Ordering::Release);
        } else {
            let since = *self.quiet_since.get_or_insert(now);
            if now.duration_since(since) >= BLOCK_TAIL {
                self.speaking.store(false, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Stop playing and close the device (nothing half-played stays queued).
    pub(crate) fn close(&mut self) {
        self.out.clear();
        self.out.close();
    }
}
