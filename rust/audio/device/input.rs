//! A microphone: a running capture stream and the reading end of its ring.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cpal::SampleFormat;
use cpal::traits::DeviceTrait;

use super::callbacks::CaptureCallback;
use super::error::{DeviceError, Direction};
use super::host::{
    Heartbeat, IO_CHUNK, Shared, StreamInfo, StreamOptions, build_stream, open_device, release,
    ring_len,
};
use crate::audio::fifo::Fifo;
use crate::audio::resample::Resampler;
use crate::queue::{Consumer, Overflow, QueueError, spsc};

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
