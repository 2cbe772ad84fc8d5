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
//! [`SUPPORTED_RATES`](crate::audio::resample::SUPPORTED_RATES) and the reader/writer side resamples (never the
//! callback). Forcing a device rate the device cannot do is a clear
//! [`DeviceError::UnsupportedRate`].

#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod alsa_runtime;
mod callbacks;
mod error;
mod host;
mod input;
mod output;

pub use callbacks::{CaptureCallback, PlaybackCallback};
pub use error::{DeviceError, Direction};
pub use host::{DeviceInfo, StreamInfo, StreamOptions, list_devices};
pub use input::AudioInput;
pub use output::{AudioOutput, ReferenceTap};
