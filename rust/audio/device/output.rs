//! A speaker: a running playback stream, the writing end of its ring, and the echo reference.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cpal::SampleFormat;
use cpal::traits::DeviceTrait;

use super::callbacks::{PlaybackCallback, PlaybackState};
use super::error::{DeviceError, Direction};
use super::host::{
    Heartbeat, IO_CHUNK, Shared, StreamInfo, StreamOptions, build_stream, open_device, release,
    ring_len,
};
use crate::audio::aec::EchoCanceller;
use crate::audio::resample::Resampler;
use crate::queue::{Consumer, Overflow, Producer, spsc};

/// Far-end reference: what the speaker played, resampled for an echo canceller.
pub struct ReferenceTap {
    ring: Consumer<f32>,
    resampler: Resampler,
    raw: Box<[f32]>,
    resampled: Box<[f32]>,
}

impl ReferenceTap {
    /// The reference's rate.
    pub fn sample_rate(&self) -> u32 {
        self.resampler.output_rate()
    }

    /// Reference samples dropped because nobody read them in time.
    pub fn dropped(&self) -> u64 {
        self.ring.dropped()
    }

    /// Move everything played since the last call into the echo canceller's
    /// far end; returns how many samples (at its rate) it got.
    pub fn feed(&mut self, aec: &mut EchoCanceller) -> Result<usize, DeviceError> {
        let mut total = 0;
        loop {
            let n = self.ring.pop_slice(&mut self.raw).unwrap_or(0);
            if n == 0 {
                return Ok(total);
            }
            let m = self
                .resampler
                .process_into(&self.raw[..n], &mut self.resampled)?;
            aec.push_far_end(&self.resampled[..m]);
            total += m;
        }
    }
}

/// Resampled samples on their way into the playback ring: `buf[start..end]`.
#[derive(Debug)]
struct Pending {
    buf: Box<[f32]>,
    start: usize,
    end: usize,
}

/// A speaker: a running playback stream and the writing end of its ring.
pub struct AudioOutput {
    stream: Option<cpal::Stream>,
    ring: Producer<f32>,
    resampler: Resampler,
    /// Resampled samples not queued yet (a timed-out write keeps them).
    pending: Pending,
    /// Samples pushed into the ring so far.
    pushed: u64,
    state: Arc<PlaybackState>,
    shared: Arc<Shared>,
    reference: Option<Consumer<f32>>,
    info: StreamInfo,
    heartbeat: Heartbeat,
}

impl std::fmt::Debug for AudioOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioOutput")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl AudioOutput {
    /// Open and start playing (silence until something is written). With
    /// `reference`, what is played is also kept for [`take_reference`](Self::take_reference).
    pub fn open(opts: &StreamOptions, reference: bool) -> Result<Self, DeviceError> {
        let opened = open_device(Direction::Output, opts)?;
        let rate = opened.chosen.rate;
        let (tx, rx) = spsc(ring_len(rate, opts.buffer_ms), Overflow::Block)?;
        let (ref_tx, ref_rx) = if reference {
            let (t, r) = spsc(ring_len(rate, 2000), Overflow::DropNewest)?;
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let state = Arc::new(PlaybackState::default());
        state.ending.store(true, Ordering::Release);
        let mut callback =
            PlaybackCallback::new(rx, ref_tx, opened.chosen.channels, Arc::clone(&state));
        let (stream, info, shared) = opened.start(opts, |device, config, format, err| {
            build_stream!(format, build_output_stream, device, config, callback, err,
                [F32 => f32, I16 => i16, I32 => i32])
        })?;
        let resampler = Resampler::new(opts.sample_rate, info.device_rate)?;
        // The tail a flush writes is at most the filter's half-length.
        let len = resampler.output_len_max(IO_CHUNK) + resampler.delay().ceil() as usize + 8;
        Ok(Self {
            stream: Some(stream),
            ring: tx,
            pending: Pending {
                buf: vec![0.0; len].into_boxed_slice(),
                start: 0,
                end: 0,
            },
            resampler,
            pushed: 0,
            state,
            shared,
            reference: ref_rx,
            info,
            heartbeat: Heartbeat::new(),
        })
    }

    /// What was opened.
    pub fn info(&self) -> &StreamInfo {
        &self.info
    }

    /// The far-end reference tap, once, at `sample_rate` (the echo
    /// canceller's rate).
    pub fn take_reference(&mut self, sample_rate: u32) -> Result<ReferenceTap, DeviceError> {
        let ring = self.reference.take().ok_or(DeviceError::NoReference)?;
        let resampler = Resampler::new(self.info.device_rate, sample_rate)?;
        Ok(ReferenceTap {
            resampled: vec![0.0; resampler.output_len_max(IO_CHUNK)].into_boxed_slice(),
            raw: vec![0.0; IO_CHUNK].into_boxed_slice(),
            ring,
            resampler,
        })
    }

    fn check(&mut self) -> Result<(), DeviceError> {
        if self.stream.is_none() {
            return Err(DeviceError::Closed {
                direction: "output",
            });
        }
        let callbacks = self.state.callbacks.load(Ordering::Relaxed);
        let message = self.shared.failure().or_else(|| {
            self.heartbeat
                .stalled(callbacks)
                .then(|| self.shared.stalled())
        });
        match message {
            Some(message) => Err(DeviceError::StreamFailed {
                direction: "output",
                device: self.info.device.clone(),
                message,
            }),
            None => Ok(()),
        }
    }

    /// Push the pending resampled samples; true once they are all queued.
    fn push_pending(&mut self, deadline: Option<Instant>) -> Result<bool, DeviceError> {
        while self.pending.start < self.pending.end {
            // Wait in short slices so a failed stream is noticed.
            let slice = match deadline {
                None => Duration::from_millis(100),
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100)),
            };
            let sent = self
                .ring
                .push_slice_timeout(
                    &self.pending.buf[self.pending.start..self.pending.end],
                    Some(slice),
                )
                .map_err(|_| DeviceError::Closed {
                    direction: "output",
                })?;
            self.pending.start += sent;
            self.pushed += sent as u64;
            if self.pending.start < self.pending.end {
                self.check()?;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(false);
                }
            }
        }
        self.pending.start = 0;
        self.pending.end = 0;
        Ok(true)
    }

    /// Queue `samples` (caller's rate) for playback, waiting up to `timeout`
    /// (`None`: as long as it takes) for room. Returns how many input
    /// samples were taken: all of them unless the timeout expired first
    /// (what was taken is queued or kept for the next call, never lost).
    pub fn write(
        &mut self,
        samples: &[f32],
        timeout: Option<Duration>,
    ) -> Result<usize, DeviceError> {
        self.check()?;
        let deadline = timeout.map(|t| Instant::now() + t);
        self.state.ending.store(false, Ordering::Release);
        let mut taken = 0;
        for chunk in samples.chunks(IO_CHUNK) {
            if !self.push_pending(deadline)? {
                return Ok(taken);
            }
            self.pending.end = self.resampler.process_into(chunk, &mut self.pending.buf)?;
            taken += chunk.len();
        }
        self.push_pending(deadline)?;
        Ok(taken)
    }

    /// End the utterance: queue the resampler's tail. Running dry after it
    /// is the end of the audio, not an underrun.
    pub fn finish(&mut self, timeout: Option<Duration>) -> Result<(), DeviceError> {
        self.check()?;
        let deadline = timeout.map(|t| Instant::now() + t);
        if self.push_pending(deadline)? {
            self.pending.end = self.resampler.flush_into(&mut self.pending.buf)?;
            self.push_pending(deadline)?;
        }
        self.state.ending.store(true, Ordering::Release);
        Ok(())
    }

    /// Stop playing what is queued, now (barge-in). Samples written after
    /// this call play normally.
    pub fn clear(&mut self) {
        self.pending.start = 0;
        self.pending.end = 0;
        self.resampler.reset();
        self.state.ending.store(true, Ordering::Release);
        self.state
            .discard_until
            .store(self.pushed, Ordering::Release);
    }

    /// Wait until everything queued has been played (or `timeout`);
    /// returns whether it was.
    pub fn wait_idle(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.pending.start == self.pending.end && self.ring.is_empty() {
                return true;
            }
            if Instant::now() >= deadline || self.check().is_err() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Samples waiting to be played, at the device rate.
    pub fn queued(&self) -> usize {
        self.ring.len() + (self.pending.end - self.pending.start)
    }

    /// Real samples played so far at the caller's rate (silence not counted).
    pub fn played_samples(&self) -> u64 {
        let played = self.state.played.load(Ordering::Relaxed);
        played * u64::from(self.info.sample_rate) / u64::from(self.info.device_rate)
    }

    /// [`played_samples`](Self::played_samples) in milliseconds.
    pub fn played_ms(&self) -> u64 {
        self.state.played.load(Ordering::Relaxed) * 1000 / u64::from(self.info.device_rate)
    }

    /// Callbacks that ran dry mid-utterance and played silence.
    pub fn underruns(&self) -> u64 {
        self.state.underruns.load(Ordering::Relaxed)
    }

    /// Silent samples (device rate) played because of underruns.
    pub fn underrun_samples(&self) -> u64 {
        self.state.underrun_samples.load(Ordering::Relaxed)
    }

    /// Stop the stream now; queued audio is dropped.
    pub fn close(&mut self) {
        release(self.stream.take());
        self.ring.close();
    }
}

impl Drop for AudioOutput {
    fn drop(&mut self) {
        release(self.stream.take());
    }
}
