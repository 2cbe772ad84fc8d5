//! Finding devices, choosing their configuration, and the plumbing every stream shares.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cpal::SampleFormat;
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

use super::error::{DeviceError, Direction, backend_error};
use crate::audio::resample::{Resampler, SUPPORTED_RATES};

/// Device rates to try, best first, when the device cannot run at the
/// caller's rate.
const FALLBACK_RATES: [u32; 6] = [48000, 44100, 24000, 16000, 22050, 8000];
/// Samples resampled per pass on the reader and writer side.
pub(super) const IO_CHUNK: usize = 2048;
/// How long opening a stream may take before it is an error.
pub(super) const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// A running stream whose callback has not run for this long has failed:
/// some backends (PulseAudio through ALSA, when the server goes away) stop
/// calling back without reporting a disconnection.
pub(super) const STALL: Duration = Duration::from_secs(2);
/// How long a new stream may take to deliver its first period (PulseAudio
/// takes about 2 s for the first stream after the server starts).
const START: Duration = Duration::from_secs(10);

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

/// The default host; on Linux, once the system's ALSA library is loaded.
fn host() -> Result<cpal::Host, DeviceError> {
    #[cfg(all(
        target_os = "linux",
        target_env = "gnu",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    super::alsa_runtime::load()?;
    Ok(cpal::default_host())
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

fn all_devices() -> Result<Vec<cpal::Device>, DeviceError> {
    host()?
        .devices()
        .map(Iterator::collect)
        .map_err(|e| backend_error(Direction::Input, "*", e))
}

/// Every device the default host knows, in a stable order.
pub fn list_devices() -> Result<Vec<DeviceInfo>, DeviceError> {
    let host = host()?;
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
    let host = host()?;
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
pub(super) struct Chosen {
    pub(super) rate: u32,
    pub(super) channels: u16,
    pub(super) format: SampleFormat,
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
pub(super) struct Shared {
    failed: AtomicBool,
    /// Transient backend errors the stream survived.
    errors: AtomicU64,
    /// The last of them, for the message when the stream stalls.
    last_error: Mutex<Option<String>>,
    message: Mutex<Option<String>>,
}

impl Shared {
    pub(super) fn fail(&self, message: String) {
        *self.message.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
        self.failed.store(true, Ordering::Release);
    }

    pub(super) fn stalled(&self) -> String {
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

    pub(super) fn failure(&self) -> Option<String> {
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

pub(super) struct Opened {
    pub(super) direction: Direction,
    pub(super) device: cpal::Device,
    pub(super) name: String,
    pub(super) chosen: Chosen,
    pub(super) config: cpal::StreamConfig,
}

pub(super) fn open_device(
    direction: Direction,
    opts: &StreamOptions,
) -> Result<Opened, DeviceError> {
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

pub(super) type ErrorCallback = Box<dyn FnMut(cpal::Error) + Send + 'static>;

impl Opened {
    /// Build the stream with `build` (which picks the callback's sample
    /// type), start it, and describe it.
    pub(super) fn start(
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

pub(super) fn ring_len(rate: u32, ms: u32) -> usize {
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
pub(super) struct Heartbeat {
    count: u64,
    at: Instant,
}

impl Heartbeat {
    pub(super) fn new() -> Self {
        Self {
            count: 0,
            at: Instant::now(),
        }
    }

    /// Record the counter now; true if it has not moved for [`STALL`]
    /// (for [`START`] before it first moves).
    pub(super) fn stalled(&mut self, count: u64) -> bool {
        let now = Instant::now();
        if count != self.count {
            *self = Self { count, at: now };
            return false;
        }
        let limit = if count == 0 { START } else { STALL };
        now.duration_since(self.at) > limit
    }
}

/// Build a cpal stream whose callback takes the device's sample type.
macro_rules! build_stream {
    ($format:expr, $build:ident, $device:expr, $config:expr, $cb:ident, $err:expr, [$($variant:ident => $t:ty),*]) => {
        match $format {
            $(SampleFormat::$variant => $device.$build::<$t, _, _>(
                $config,
                move |data, _| $cb.process(data),
                $err,
                Some(super::host::OPEN_TIMEOUT),
            ),)*
            // choose() only picks formats in FORMATS.
            other => Err(cpal::Error::with_message(
                cpal::ErrorKind::UnsupportedConfig,
                format!("sample format {other} is not supported"),
            )),
        }
    };
}

pub(super) use build_stream;

/// Drop a stream. cpal joins the stream's worker thread on drop, and a
/// worker stuck in a backend that stopped answering (a PulseAudio server
/// that went away) never returns: the stream is dropped on a thread of its
/// own, and the caller waits for that at most [`STALL`].
pub(super) fn release(stream: Option<cpal::Stream>) {
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
}
