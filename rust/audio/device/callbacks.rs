//! The device callbacks' real-time work: convert, downmix or upmix, move samples through the rings.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cpal::FromSample;

use crate::queue::{Consumer, Overflow, Producer, QueueConfigError, spsc};

/// Mono frames a callback converts per pass through its scratch buffer.
const CALLBACK_CHUNK: usize = 1024;
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
pub(super) struct PlaybackState {
    /// Callbacks run so far: the stream's heartbeat.
    pub(super) callbacks: AtomicU64,
    /// Real samples played (device rate), not counting silence.
    pub(super) played: AtomicU64,
    /// Callbacks that ran dry mid-utterance.
    pub(super) underruns: AtomicU64,
    /// Silent samples played because of underruns.
    pub(super) underrun_samples: AtomicU64,
    /// The writer ended its utterance: running dry now is not an underrun.
    pub(super) ending: AtomicBool,
    /// Discard queued samples until the callback has consumed this many in
    /// total (set by `clear`).
    pub(super) discard_until: AtomicU64,
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
    pub(super) fn new(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::spsc;

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
