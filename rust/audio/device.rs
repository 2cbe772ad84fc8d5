//! Audio devices: microphone capture and speaker playback through cpal, with lock-free rings.
//!
//! On Linux cpal talks to ALSA, which reaches PulseAudio or PipeWire through
//! their ALSA plugins (`libasound2-plugins`); CoreAudio and WASAPI elsewhere.
//!
//! # The real-time side
//!
//! The device's callbacks ([`CaptureCallback`], [`PlaybackCallback`]) run on
//! the audio thread. They never allocate, never take the GIL (there is no
//! Python here) and never lock: they convert samples, downmix or upmix
//! through a scratch buffer sized at construction, and move samples through
//! an SPSC ring (`crate::queue::spsc`). The only time they touch a lock is
//! the ring's wake-up of a reader that is asleep waiting for audio, which
//! passes through an uncontended mutex; a reader that polls never causes it.
//!
//! * Capture pushes mono samples at the device rate; if the reader falls
//!   behind, new samples are dropped and counted ([`AudioInput::overruns`]).
//! * Playback pulls mono samples and writes every channel; when the ring
//!   runs dry mid-utterance it plays silence and counts an underrun
//!   ([`AudioOutput::underruns`]). It counts the samples it actually played
//!   ([`AudioOutput::played_samples`]), which is what a client needs for
//!   `conversation.item.truncate`, and it can copy what it played into a
//!   second ring, the far-end reference of the echo canceller
//!   ([`AudioOutput::take_reference`]).
//!
//! # Rates
//!
//! The caller picks its own rate (16 kHz for the VAD, 24 kHz for Realtime
//! audio). If the device runs at that rate too, samples pass through;
//! otherwise the device is opened at the best rate it supports from
//! [`SUPPORTED_RATES`] and the reader/writer side resamples (never the
//! callback). Forcing a device rate the device cannot do is a clear
//! [`DeviceError::UnsupportedRate`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SampleFormat};
use thiserror::Error;

use super::aec::EchoCanceller;
use super::fifo::Fifo;
use super::resample::{ResampleError, Resampler, SUPPORTED_RATES};
use crate::queue::{Consumer, Overflow, Producer, QueueConfigError, QueueError, spsc};

/// Device rates to try, best first, when the device cannot run at the
/// caller's rate.
const FALLBACK_RATES: [u32; 6] = [48000, 44100, 24000, 16000, 22050, 8000];
/// Mono frames a callback converts per pass through its scratch buffer.
const CALLBACK_CHUNK: usize = 1024;
/// Samples resampled per pass on the reader and writer side.
const IO_CHUNK: usize = 2048;
/// How long opening a stream may take before it is an error.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// A running stream whose callback has not run for this long has failed:
/// some backends (PulseAudio through ALSA, when the server goes away) stop
/// calling back without reporting a disconnection.
const STALL: Duration = Duration::from_secs(2);
/// How long a new stream may take to deliver its first period (PulseAudio
/// takes about 2 s for the first stream after the server starts).
const START: Duration = Duration::from_secs(10);

/// Capture or playback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A microphone (an ALSA capture PCM).
    Input,
    /// A speaker (an ALSA playback PCM).
    Output,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
        }
    }
}

/// Errors from listing, opening or running audio devices.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceError {
    /// No device matches the name or index. Run with `--list_devices` and
    /// pass one of the names or indices it shows.
    #[error("no {direction} device {wanted:?}; {direction} devices: {available}")]
    NotFound {
        /// `input` or `output`.
        direction: &'static str,
        /// The name or index asked for.
        wanted: String,
        /// The devices there are, `index: name`, comma separated.
        available: String,
    },
    /// A name matches several devices. Pass the full name or the index.
    #[error("{direction} device name {wanted:?} is ambiguous: {matches}")]
    Ambiguous {
        /// `input` or `output`.
        direction: &'static str,
        /// The name asked for.
        wanted: String,
        /// The devices it matches.
        matches: String,
    },
    /// The device cannot run at the rate asked for (or, with no rate forced,
    /// at any rate we resample from). Pick a rate it lists, or let the
    /// device layer choose and resample.
    #[error("{direction} device {device:?} does not support {rate} Hz; it supports {supported}")]
    UnsupportedRate {
        /// `input` or `output`.
        direction: &'static str,
        /// The device.
        device: String,
        /// The rate asked for (0: none of ours).
        rate: u32,
        /// What it supports: rate ranges, channels and sample formats.
        supported: String,
    },
    /// The caller's own rate is not one we resample to or from.
    #[error(transparent)]
    Rate(#[from] ResampleError),
    /// A ring size that cannot be built.
    #[error(transparent)]
    Buffer(#[from] QueueConfigError),
    /// The audio backend refused (device busy, permission, no audio
    /// server...). The message is the backend's.
    #[error("{direction} device {device:?}: {message}")]
    Backend {
        /// `input` or `output`.
        direction: &'static str,
        /// The device.
        device: String,
        /// What the backend said.
        message: String,
    },
    /// The running stream failed (the device disappeared, the server went
    /// away). What was captured before is still returned first; reopen the
    /// device to go on.
    #[error("{direction} stream on {device:?} failed: {message}")]
    StreamFailed {
        /// `input` or `output`.
        direction: &'static str,
        /// The device.
        device: String,
        /// What the backend said.
        message: String,
    },
    /// The stream was closed with `close()`.
    #[error("the {direction} stream is closed")]
    Closed {
        /// `input` or `output`.
        direction: &'static str,
    },
    /// The echo-reference tap was already taken, or not asked for at open.
    #[error("no echo reference tap: open the output with a reference and take it once")]
    NoReference,
}

/// One device as the host lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Position in [`list_devices`]: what `--input_device 3` means.
    pub index: usize,
    /// The host's name for it (the ALSA PCM name, e.g. `pulse`).
    pub name: String,
    /// A human description, when the host gives one.
    pub description: String,
    /// Whether it can capture.
    pub is_input: bool,
    /// Whether it can play.
    pub is_output: bool,
    /// Whether it is the host's default input.
    pub default_input: bool,
    /// Whether it is the host's default output.
    pub default_output: bool,
}

fn host() -> cpal::Host {
    cpal::default_host()
}

fn device_name(device: &cpal::Device) -> String {
    device
        .id()
        .map(|id| id.id().to_owned())
        .or_else(|_| device.description().map(|d| d.name().to_owned()))
        .unwrap_or_else(|_| "?".to_owned())
}

fn device_description(device: &cpal::Device) -> String {
    device
        .description()
        .map(|d| d.extended().collect::<Vec<_>>().join(" / "))
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| device.description().ok().map(|d| d.name().to_owned()))
        .unwrap_or_default()
}

fn backend_error(direction: Direction, device: &str, e: impl std::fmt::Display) -> DeviceError {
    DeviceError::Backend {
        direction: direction.as_str(),
        device: device.to_owned(),
        message: e.to_string(),
    }
}

fn all_devices() -> Result<Vec<cpal::Device>, DeviceError> {
    host()
        .devices()
        .map(Iterator::collect)
        .map_err(|e| backend_error(Direction::Input, "*", e))
}

/// Every device the default host knows, in a stable order.
pub fn list_devices() -> Result<Vec<DeviceInfo>, DeviceError> {
    let host = host();
    let default_in = host.default_input_device().map(|d| device_name(&d));
    let default_out = host.default_output_device().map(|d| device_name(&d));
    Ok(all_devices()?
        .iter()
        .enumerate()
        .map(|(index, d)| {
            let name = device_name(d);
            DeviceInfo {
                index,
                default_input: default_in.as_deref() == Some(name.as_str()),
                default_output: default_out.as_deref() == Some(name.as_str()),
                description: device_description(d),
                is_input: d.supports_input(),
                is_output: d.supports_output(),
                name,
            }
        })
        .collect())
}

/// Find a device: `None` is the host's default; a number is an index into
/// [`list_devices`]; anything else is a name, matched exactly against the
/// host's name or description first, then as a unique case-insensitive
/// substring of either.
fn find_device(direction: Direction, wanted: Option<&str>) -> Result<cpal::Device, DeviceError> {
    let host = host();
    let capable = |d: &cpal::Device| match direction {
        Direction::Input => d.supports_input(),
        Direction::Output => d.supports_output(),
    };
    let not_found = |wanted: &str| -> DeviceError {
        let available = all_devices()
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter(|(_, d)| capable(d))
            .map(|(i, d)| format!("{i}: {}", device_name(d)))
            .collect::<Vec<_>>()
            .join(", ");
        DeviceError::NotFound {
            direction: direction.as_str(),
            wanted: wanted.to_owned(),
            available: if available.is_empty() {
                "none".to_owned()
            } else {
                available
            },
        }
    };
    let Some(wanted) = wanted.map(str::trim).filter(|w| !w.is_empty()) else {
        let default = match direction {
            Direction::Input => host.default_input_device(),
            Direction::Output => host.default_output_device(),
        };
        return default.ok_or_else(|| not_found("(default)"));
    };
    let devices = all_devices()?;
    if let Ok(index) = wanted.parse::<usize>() {
        return devices
            .into_iter()
            .nth(index)
            .filter(|d| capable(d))
            .ok_or_else(|| not_found(wanted));
    }
    let exact: Vec<&cpal::Device> = devices
        .iter()
        .filter(|d| capable(d))
        .filter(|d| {
            device_name(d) == wanted || d.description().is_ok_and(|desc| desc.name() == wanted)
        })
        .collect();
    if let Some(d) = exact.first() {
        return Ok((*d).clone());
    }
    let lower = wanted.to_lowercase();
    let partial: Vec<&cpal::Device> = devices
        .iter()
        .filter(|d| capable(d))
        .filter(|d| {
            device_name(d).to_lowercase().contains(&lower)
                || device_description(d).to_lowercase().contains(&lower)
        })
        .collect();
    match partial.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(not_found(wanted)),
        many => Err(DeviceError::Ambiguous {
            direction: direction.as_str(),
            wanted: wanted.to_owned(),
            matches: many
                .iter()
                .map(|d| device_name(d))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Sample formats we convert, best first.
const FORMATS: [SampleFormat; 3] = [SampleFormat::F32, SampleFormat::I16, SampleFormat::I32];

/// The stream configuration chosen for a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chosen {
    rate: u32,
    channels: u16,
    format: SampleFormat,
}

fn describe_ranges(ranges: &[cpal::SupportedStreamConfigRange]) -> String {
    if ranges.is_empty() {
        return "no configuration at all".to_owned();
    }
    ranges
        .iter()
        .map(|r| {
            format!(
                "{}-{} Hz x{} {}",
                r.min_sample_rate(),
                r.max_sample_rate(),
                r.channels(),
                r.sample_format()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Pick rate, channels and format: the forced device rate if any (or an
/// error), else the caller's rate if the device has it, else the best of
/// [`FALLBACK_RATES`] it has. Mono is preferred, then the fewest channels.
fn choose(
    ranges: &[cpal::SupportedStreamConfigRange],
    want: u32,
    forced: Option<u32>,
) -> Option<Chosen> {
    let usable = |r: &&cpal::SupportedStreamConfigRange| {
        FORMATS.contains(&r.sample_format()) && r.channels() > 0
    };
    let rank = |r: &cpal::SupportedStreamConfigRange| {
        let format = FORMATS
            .iter()
            .position(|f| *f == r.sample_format())
            .unwrap_or(FORMATS.len());
        (r.channels() != 1, r.channels(), format)
    };
    let candidates: Vec<u32> = match forced {
        Some(rate) => vec![rate],
        None => std::iter::once(want).chain(FALLBACK_RATES).collect(),
    };
    candidates.into_iter().find_map(|rate| {
        ranges
            .iter()
            .filter(usable)
            .filter(|r| r.min_sample_rate() <= rate && rate <= r.max_sample_rate())
            .min_by_key(|r| rank(r))
            .map(|r| Chosen {
                rate,
                channels: r.channels(),
                format: r.sample_format(),
            })
    })
}

/// Counters and the failure slot shared by a stream's two sides.
#[derive(Debug, Default)]
struct Shared {
    failed: AtomicBool,
    /// Transient backend errors the stream survived.
    errors: AtomicU64,
    /// The last of them, for the message when the stream stalls.
    last_error: Mutex<Option<String>>,
    message: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, message: String) {
        *self.message.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
        self.failed.store(true, Ordering::Release);
    }

    fn stalled(&self) -> String {
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match last {
            Some(e) => format!("the device stopped (last backend error: {e})"),
            None => "the device stopped delivering audio".to_owned(),
        }
    }

    fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        Some(
            self.message
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_default(),
        )
    }
}

/// The capture callback's work: interleaved device samples in, mono f32
/// into the ring. Public so benches and tests can drive it without a device.
pub struct CaptureCallback {
    ring: Producer<f32>,
    channels: usize,
    scratch: Box<[f32]>,
}

impl CaptureCallback {
    /// A callback for `channels`-channel input pushing into `ring`.
    pub fn new(ring: Producer<f32>, channels: u16) -> Self {
        Self {
            ring,
            channels: usize::from(channels.max(1)),
            scratch: vec![0.0; CALLBACK_CHUNK].into_boxed_slice(),
        }
    }

    /// Downmix `data` (interleaved) to mono and push it. Samples that do
    /// not fit are dropped and counted by the ring; a closed ring drops all.
    pub fn process<T>(&mut self, data: &[T])
    where
        T: Copy,
        f32: FromSample<T>,
    {
        let ch = self.channels;
        let scale = 1.0 / ch as f32;
        for block in data.chunks(CALLBACK_CHUNK * ch) {
            let frames = block.len() / ch;
            let mono = &mut self.scratch[..frames];
            if ch == 1 {
                for (m, &s) in mono.iter_mut().zip(block) {
                    *m = f32::from_sample_(s);
                }
            } else {
                for (m, frame) in mono.iter_mut().zip(block.chunks_exact(ch)) {
                    *m = frame.iter().map(|&s| f32::from_sample_(s)).sum::<f32>() * scale;
                }
            }
            // DropNewest counts what does not fit; Closed means nobody reads.
            let _ = self.ring.push_slice(mono);
        }
    }
}

/// State the playback callback shares with the writer.
#[derive(Debug, Default)]
struct PlaybackState {
    /// Callbacks run so far: the stream's heartbeat.
    callbacks: AtomicU64,
    /// Real samples played (device rate), not counting silence.
    played: AtomicU64,
    /// Callbacks that ran dry mid-utterance.
    underruns: AtomicU64,
    /// Silent samples played because of underruns.
    underrun_samples: AtomicU64,
    /// The writer ended its utterance: running dry now is not an underrun.
    ending: AtomicBool,
    /// Discard queued samples until the callback has consumed this many in
    /// total (set by `clear`).
    discard_until: AtomicU64,
}

/// The playback callback's work: mono f32 from the ring out to every
/// channel, silence when it runs dry. Public so benches and tests can drive
/// it without a device.
pub struct PlaybackCallback {
    ring: Consumer<f32>,
    reference: Option<Producer<f32>>,
    channels: usize,
    scratch: Box<[f32]>,
    state: Arc<PlaybackState>,
    /// Samples consumed from the ring so far, played or discarded.
    consumed: u64,
    playing: bool,
}

impl PlaybackCallback {
    fn new(
        ring: Consumer<f32>,
        reference: Option<Producer<f32>>,
        channels: u16,
        state: Arc<PlaybackState>,
    ) -> Self {
        Self {
            ring,
            reference,
            channels: usize::from(channels.max(1)),
            scratch: vec![0.0; CALLBACK_CHUNK].into_boxed_slice(),
            state,
            consumed: 0,
            playing: false,
        }
    }

    /// A callback with its own ring of `capacity` samples, for benches and
    /// tests: returns the callback and the writing end of its ring.
    pub fn standalone(
        capacity: usize,
        channels: u16,
        reference: Option<Producer<f32>>,
    ) -> Result<(Self, Producer<f32>), QueueConfigError> {
        let (tx, rx) = spsc(capacity, Overflow::Block)?;
        Ok((Self::new(rx, reference, channels, Arc::default()), tx))
    }

    /// Real samples played so far.
    pub fn played(&self) -> u64 {
        self.state.played.load(Ordering::Relaxed)
    }

    /// Callbacks that ran dry mid-utterance so far.
    pub fn underruns(&self) -> u64 {
        self.state.underruns.load(Ordering::Relaxed)
    }

    /// Fill `data` (interleaved) from the ring.
    pub fn process<T>(&mut self, data: &mut [T])
    where
        T: Copy + FromSample<f32>,
    {
        self.state.callbacks.fetch_add(1, Ordering::Relaxed);
        let until = self.state.discard_until.load(Ordering::Acquire);
        if until > self.consumed {
            let want = usize::try_from(until - self.consumed).unwrap_or(usize::MAX);
            self.consumed += self.ring.skip(want) as u64;
            self.playing = false;
        }
        let ch = self.channels;
        let mut got_total = 0u64;
        let mut short = 0u64;
        for block in data.chunks_mut(CALLBACK_CHUNK * ch) {
            let frames = block.len() / ch;
            let mono = &mut self.scratch[..frames];
            let got = self.ring.pop_slice(mono).unwrap_or(0);
            mono[got..].fill(0.0);
            got_total += got as u64;
            short += (frames - got) as u64;
            for (frame, &m) in block.chunks_exact_mut(ch).zip(mono.iter()) {
                let s = T::from_sample_(m);
                frame.fill(s);
            }
            if let Some(reference) = self.reference.as_mut() {
                // DropNewest: a reference nobody reads is dropped and counted.
                let _ = reference.push_slice(mono);
            }
        }
        self.consumed += got_total;
        self.state.played.fetch_add(got_total, Ordering::Relaxed);
        if got_total > 0 {
            self.playing = true;
        }
        if short > 0 && self.playing {
            if self.state.ending.load(Ordering::Acquire) {
                self.playing = false;
            } else {
                self.state.underruns.fetch_add(1, Ordering::Relaxed);
                self.state
                    .underrun_samples
                    .fetch_add(short, Ordering::Relaxed);
            }
        }
    }
}

/// What was opened: the device and the rates on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The device's name.
    pub device: String,
    /// The caller's rate.
    pub sample_rate: u32,
    /// The rate the device runs at (resampled from/to `sample_rate`).
    pub device_rate: u32,
    /// The device's channel count (downmixed/upmixed to mono).
    pub channels: u16,
    /// The device's sample format, e.g. `f32`, `i16`.
    pub sample_format: String,
}

/// How to open a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    /// `None` for the default device, a number for an index into
    /// [`list_devices`], or a name.
    pub device: Option<String>,
    /// The caller's rate (any of [`SUPPORTED_RATES`]).
    pub sample_rate: u32,
    /// Force the device to this rate (an error if it cannot), instead of
    /// choosing one.
    pub device_rate: Option<u32>,
    /// Ring size in milliseconds of audio.
    pub buffer_ms: u32,
}

impl StreamOptions {
    /// Default device at `sample_rate`, one second of ring.
    pub fn new(sample_rate: u32) -> Self {
        Self {
            device: None,
            sample_rate,
            device_rate: None,
            buffer_ms: 1000,
        }
    }
}

struct Opened {
    direction: Direction,
    device: cpal::Device,
    name: String,
    chosen: Chosen,
    config: cpal::StreamConfig,
}

fn open_device(direction: Direction, opts: &StreamOptions) -> Result<Opened, DeviceError> {
    // The caller's rate must be one we resample: check before touching a device.
    Resampler::new(opts.sample_rate, opts.sample_rate)?;
    let device = find_device(direction, opts.device.as_deref())?;
    let name = device_name(&device);
    let ranges: Vec<cpal::SupportedStreamConfigRange> = match direction {
        Direction::Input => device.supported_input_configs().map(Iterator::collect),
        Direction::Output => device.supported_output_configs().map(Iterator::collect),
    }
    .map_err(|e| backend_error(direction, &name, e))?;
    let chosen = choose(&ranges, opts.sample_rate, opts.device_rate)
        .filter(|c| opts.device_rate.is_some() || SUPPORTED_RATES.contains(&c.rate))
        .ok_or_else(|| DeviceError::UnsupportedRate {
            direction: direction.as_str(),
            device: name.clone(),
            rate: opts.device_rate.unwrap_or(opts.sample_rate),
            supported: describe_ranges(&ranges),
        })?;
    // A forced rate we cannot resample from is as unusable as one the device lacks.
    Resampler::new(chosen.rate, opts.sample_rate)?;
    let config = cpal::StreamConfig {
        channels: chosen.channels,
        sample_rate: chosen.rate,
        buffer_size: cpal::BufferSize::Default,
    };
    Ok(Opened {
        direction,
        device,
        name,
        chosen,
        config,
    })
}

type ErrorCallback = Box<dyn FnMut(cpal::Error) + Send + 'static>;

impl Opened {
    /// Build the stream with `build` (which picks the callback's sample
    /// type), start it, and describe it.
    fn start(
        self,
        opts: &StreamOptions,
        build: impl FnOnce(
            &cpal::Device,
            cpal::StreamConfig,
            SampleFormat,
            ErrorCallback,
        ) -> Result<cpal::Stream, cpal::Error>,
    ) -> Result<(cpal::Stream, StreamInfo, Arc<Shared>), DeviceError> {
        let shared = Arc::new(Shared::default());
        let err = Box::new(error_callback(Arc::clone(&shared), self.direction));
        let failed = |e: cpal::Error| backend_error(self.direction, &self.name, e);
        let stream = build(&self.device, self.config, self.chosen.format, err).map_err(failed)?;
        stream.play().map_err(failed)?;
        let info = StreamInfo {
            sample_rate: opts.sample_rate,
            device_rate: self.chosen.rate,
            channels: self.chosen.channels,
            sample_format: self.chosen.format.to_string(),
            device: self.name,
        };
        Ok((stream, info, shared))
    }
}

fn ring_len(rate: u32, ms: u32) -> usize {
    (u64::from(rate) * u64::from(ms.max(20)) / 1000) as usize
}

fn error_callback(
    shared: Arc<Shared>,
    direction: Direction,
) -> impl FnMut(cpal::Error) + Send + 'static {
    move |e: cpal::Error| {
        // cpal keeps the stream running after any error but these: the
        // device is gone. Xruns are counted by the rings; the rest are
        // transient (the PulseAudio ALSA plugin reports EIO from
        // snd_pcm_avail_delay until the server has timing information), so
        // they are counted and logged once.
        let fatal = matches!(
            e.kind(),
            cpal::ErrorKind::DeviceNotAvailable
                | cpal::ErrorKind::StreamInvalidated
                | cpal::ErrorKind::DeviceChanged
        );
        if fatal {
            tracing::warn!(direction = direction.as_str(), error = %e, "audio stream failed");
            shared.fail(e.to_string());
        } else if e.kind() != cpal::ErrorKind::Xrun {
            *shared
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
            if shared.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(direction = direction.as_str(), error = %e, "audio stream error (stream goes on)");
            } else {
                tracing::debug!(direction = direction.as_str(), error = %e, "audio stream error (stream goes on)");
            }
        }
    }
}

/// When a stream's callback counter last moved.
#[derive(Debug, Clone, Copy)]
struct Heartbeat {
    count: u64,
    at: Instant,
}

impl Heartbeat {
    fn new() -> Self {
        Self {
            count: 0,
            at: Instant::now(),
        }
    }

    /// Record the counter now; true if it has not moved for [`STALL`]
    /// (for [`START`] before it first moves).
    fn stalled(&mut self, count: u64) -> bool {
        let now = Instant::now();
        if count != self.count {
            *self = Self { count, at: now };
            return false;
        }
        let limit = if count == 0 { START } else { STALL };
        now.duration_since(self.at) > limit
    }
}

/// A microphone: a running capture stream and the reading end of its ring.
pub struct AudioInput {
    stream: Option<cpal::Stream>,
    ring: Consumer<f32>,
    resampler: Resampler,
    raw: Box<[f32]>,
    resampled: Box<[f32]>,
    carry: Fifo,
    shared: Arc<Shared>,
    info: StreamInfo,
    read_total: u64,
    heartbeat: Heartbeat,
}

impl std::fmt::Debug for AudioInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioInput")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

macro_rules! build_stream {
    ($format:expr, $build:ident, $device:expr, $config:expr, $cb:ident, $err:expr, [$($variant:ident => $t:ty),*]) => {
        match $format {
            $(SampleFormat::$variant => $device.$build::<$t, _, _>(
                $config,
                move |data, _| $cb.process(data),
                $err,
                Some(OPEN_TIMEOUT),
            ),)*
            // choose() only picks formats in FORMATS.
            other => Err(cpal::Error::with_message(
                cpal::ErrorKind::UnsupportedConfig,
                format!("sample format {other} is not supported"),
            )),
        }
    };
}

impl AudioInput {
    /// Open and start capturing.
    pub fn open(opts: &StreamOptions) -> Result<Self, DeviceError> {
        let opened = open_device(Direction::Input, opts)?;
        let (tx, rx) = spsc(
            ring_len(opened.chosen.rate, opts.buffer_ms),
            Overflow::DropNewest,
        )?;
        let mut callback = CaptureCallback::new(tx, opened.chosen.channels);
        let (stream, info, shared) = opened.start(opts, |device, config, format, err| {
            build_stream!(format, build_input_stream, device, config, callback, err,
                [F32 => f32, I16 => i16, I32 => i32])
        })?;
        let resampler = Resampler::new(info.device_rate, opts.sample_rate)?;
        let resampled = vec![0.0; resampler.output_len_max(IO_CHUNK)].into_boxed_slice();
        Ok(Self {
            stream: Some(stream),
            ring: rx,
            carry: Fifo::new(resampled.len()),
            resampler,
            raw: vec![0.0; IO_CHUNK].into_boxed_slice(),
            resampled,
            shared,
            info,
            read_total: 0,
            heartbeat: Heartbeat::new(),
        })
    }

    /// What was opened.
    pub fn info(&self) -> &StreamInfo {
        &self.info
    }

    /// Device samples dropped because the reader fell behind.
    pub fn overruns(&self) -> u64 {
        self.ring.dropped()
    }

    /// Samples returned by [`read`](Self::read) so far (caller's rate).
    pub fn samples_read(&self) -> u64 {
        self.read_total
    }

    /// Fill `out` with captured audio at the caller's rate, waiting up to
    /// `timeout` in all (`None`: until full). Returns how many samples were
    /// written: fewer than `out.len()` only on timeout. Once the stream has
    /// failed or closed, what was captured before is returned first, then
    /// the error.
    pub fn read(
        &mut self,
        out: &mut [f32],
        timeout: Option<Duration>,
    ) -> Result<usize, DeviceError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut written = self.carry.pop(out);
        while written < out.len() {
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) => Some(left),
                    None => break,
                },
            };
            // Wait in short slices so a failed stream is noticed.
            let slice = left.map_or(Duration::from_millis(100), |l| {
                l.min(Duration::from_millis(100))
            });
            let n = match self.ring.pop_slice_timeout(&mut self.raw, Some(slice)) {
                Ok(n) => n,
                Err(QueueError::Timeout) => 0,
                Err(_) => {
                    return self.finish_read(written, DeviceError::Closed { direction: "input" });
                }
            };
            if n == 0 {
                // A capture callback pushes every period, silence included.
                let message = self.shared.failure().or_else(|| {
                    self.heartbeat
                        .stalled(self.ring.stats().pushed)
                        .then(|| self.shared.stalled())
                });
                if let Some(message) = message {
                    let err = DeviceError::StreamFailed {
                        direction: "input",
                        device: self.info.device.clone(),
                        message,
                    };
                    return self.finish_read(written, err);
                }
                continue;
            }
            let m = self
                .resampler
                .process_into(&self.raw[..n], &mut self.resampled)?;
            let take = m.min(out.len() - written);
            out[written..written + take].copy_from_slice(&self.resampled[..take]);
            written += take;
            self.carry.push(&self.resampled[take..m]);
        }
        self.read_total += written as u64;
        Ok(written)
    }

    fn finish_read(&mut self, written: usize, err: DeviceError) -> Result<usize, DeviceError> {
        self.read_total += written as u64;
        if written > 0 { Ok(written) } else { Err(err) }
    }

    /// Stop the stream; later reads drain what was captured, then fail.
    pub fn close(&mut self) {
        release(self.stream.take());
        self.ring.close();
    }
}

impl Drop for AudioInput {
    fn drop(&mut self) {
        release(self.stream.take());
    }
}

/// Drop a stream. cpal joins the stream's worker thread on drop, and a
/// worker stuck in a backend that stopped answering (a PulseAudio server
/// that went away) never returns: the stream is dropped on a thread of its
/// own, and the caller waits for that at most [`STALL`].
fn release(stream: Option<cpal::Stream>) {
    let Some(stream) = stream else { return };
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let dropper = std::thread::Builder::new()
        .name("s2s-audio-release".to_owned())
        .spawn(move || {
            drop(stream);
            let _ = done_tx.send(());
        });
    match dropper {
        Ok(_) => {
            if done_rx.recv_timeout(STALL).is_err() {
                tracing::warn!("an audio stream did not stop within 2 s; left to its backend");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not start a thread to release an audio stream"),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn range(min: u32, max: u32, ch: u16, f: SampleFormat) -> cpal::SupportedStreamConfigRange {
        cpal::SupportedStreamConfigRange::new(ch, min, max, cpal::SupportedBufferSize::Unknown, f)
    }

    #[test]
    fn choose_prefers_the_callers_rate_then_fallbacks_and_mono() {
        let ranges = [
            range(44100, 48000, 2, SampleFormat::I16),
            range(8000, 16000, 2, SampleFormat::F32),
            range(8000, 16000, 1, SampleFormat::I16),
        ];
        let c = choose(&ranges, 16000, None).unwrap();
        assert_eq!(
            (c.rate, c.channels, c.format),
            (16000, 1, SampleFormat::I16)
        );
        let c = choose(&ranges, 24000, None).unwrap();
        assert_eq!((c.rate, c.channels), (48000, 2));
        assert_eq!(choose(&ranges, 16000, Some(96000)), None);
        let c = choose(&ranges, 16000, Some(44100)).unwrap();
        assert_eq!(c.rate, 44100);
        let u8_only = [range(8000, 48000, 1, SampleFormat::U8)];
        assert_eq!(choose(&u8_only, 16000, None), None);
    }

    #[test]
    fn capture_downmixes_converts_and_counts_overruns() {
        let (tx, mut rx) = spsc::<f32>(4, Overflow::DropNewest).unwrap();
        let mut cb = CaptureCallback::new(tx, 2);
        cb.process::<i16>(&[16384, 0, -16384, -16384, 8192, 8192]);
        let mut out = [0.0; 4];
        assert_eq!(rx.pop_slice(&mut out).unwrap(), 3);
        assert_eq!(&out[..3], &[0.25, -0.5, 0.25]);
        cb.process::<f32>(&[0.5; 12]);
        assert_eq!(rx.len(), 4);
        assert_eq!(rx.dropped(), 2);
    }

    #[test]
    fn playback_counts_played_underruns_and_honours_clear() {
        let (ref_tx, mut ref_rx) = spsc::<f32>(64, Overflow::DropNewest).unwrap();
        let (mut cb, mut tx) = PlaybackCallback::standalone(64, 2, Some(ref_tx)).unwrap();
        let state = Arc::clone(&cb.state);
        let mut out = [0.0f32; 8];
        // Idle: silence, and no underrun.
        cb.process(&mut out);
        assert_eq!((cb.played(), cb.underruns()), (0, 0));
        // Mid-utterance the writer falls behind: an underrun.
        state.ending.store(false, Ordering::Release);
        tx.push_slice(&[0.5; 3]).unwrap();
        cb.process(&mut out);
        assert_eq!(out.to_vec(), [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0]);
        assert_eq!((cb.played(), cb.underruns()), (3, 1));
        // The end of the utterance is not an underrun.
        tx.push_slice(&[0.25; 2]).unwrap();
        state.ending.store(true, Ordering::Release);
        cb.process(&mut out);
        assert_eq!((cb.played(), cb.underruns()), (5, 1));
        // clear() discards what is queued up to the mark, not what follows.
        tx.push_slice(&[0.75; 10]).unwrap();
        state.discard_until.store(15, Ordering::Release);
        tx.push_slice(&[-0.5; 4]).unwrap();
        cb.process(&mut out);
        assert_eq!(out.to_vec(), [-0.5; 8]);
        assert_eq!(cb.played(), 9);
        // The reference saw everything played, silence included, as mono.
        let mut r = [0.0; 64];
        assert_eq!(ref_rx.pop_slice(&mut r).unwrap(), 16);
        assert_eq!(&r[4..8], &[0.5, 0.5, 0.5, 0.0]);
    }
}
