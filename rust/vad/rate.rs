//! The sample rates the Silero model runs at natively.

use super::error::VadError;

/// The two rates the Silero model runs at natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleRate {
    /// 8 kHz: 256-sample chunks (32 ms) with 32 samples of context.
    Hz8000,
    /// 16 kHz: 512-sample chunks (32 ms) with 64 samples of context.
    Hz16000,
}

impl SampleRate {
    /// The native rate for `hz`, or [`VadError::UnsupportedSampleRate`].
    pub fn from_hz(hz: u32) -> Result<Self, VadError> {
        match hz {
            8000 => Ok(Self::Hz8000),
            16000 => Ok(Self::Hz16000),
            rate => Err(VadError::UnsupportedSampleRate { rate }),
        }
    }

    /// Samples per second.
    pub const fn hz(self) -> u32 {
        match self {
            Self::Hz8000 => 8000,
            Self::Hz16000 => 16000,
        }
    }

    /// New samples the model consumes per call.
    pub const fn chunk_len(self) -> usize {
        match self {
            Self::Hz8000 => 256,
            Self::Hz16000 => 512,
        }
    }

    /// Samples of the previous chunk prepended to each input.
    pub const fn context_len(self) -> usize {
        match self {
            Self::Hz8000 => 32,
            Self::Hz16000 => 64,
        }
    }

    /// Milliseconds of audio in `samples` samples (floored).
    pub const fn samples_to_ms(self, samples: u64) -> u64 {
        samples * 1000 / self.hz() as u64
    }

    /// Samples in `ms` milliseconds (rounded to the nearest sample).
    pub fn ms_to_samples(self, ms: f64) -> u64 {
        (ms * f64::from(self.hz()) / 1000.0).round() as u64
    }
}
