//! Errors of the audio device layer, and which side of a stream they concern.

use thiserror::Error;

use crate::audio::resample::ResampleError;
use crate::queue::QueueConfigError;

/// Capture or playback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A microphone (an ALSA capture PCM).
    Input,
    /// A speaker (an ALSA playback PCM).
    Output,
}

impl Direction {
    pub(super) fn as_str(self) -> &'static str {
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

pub(super) fn backend_error(
    direction: Direction,
    device: &str,
    e: impl std::fmt::Display,
) -> DeviceError {
    DeviceError::Backend {
        direction: direction.as_str(),
        device: device.to_owned(),
        message: e.to_string(),
    }
}
