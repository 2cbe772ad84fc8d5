//! The Silero VAD model (v5/v6): one shared model, per-stream state, batching, two backends.
//!
//! [`SileroVad`] runs the model with one of two backends, chosen when it is
//! loaded ([`VadBackend`]):
//!
//! * **native** ([`super::native`]): the network re-implemented in Rust, with
//!   its weights read from the same `silero_vad.onnx`. It needs no ONNX
//!   Runtime and is several times faster on one stream, where ONNX Runtime's
//!   per-node overhead dominates this small graph.
//! * **onnxruntime** ([`super::onnxruntime`]): the file run by ONNX Runtime
//!   itself. It runs any Silero v5/v6 file and is the reference the native
//!   backend is tested against.
//!
//! The default, `auto`, takes the native backend when it recognises the file
//! and ONNX Runtime otherwise.

use std::fmt;
use std::path::{Path, PathBuf};

use super::error::VadError;
use super::native::NativeSilero;
use super::onnxruntime::{OrtSilero, onnxruntime_initialised};
use super::rate::SampleRate;
use super::state::{SileroState, SileroVadOptions, VadBackend};

enum Runner {
    // Boxed: the native model holds both networks' layer tables inline.
    Native(Box<NativeSilero>),
    OnnxRuntime(OrtSilero),
}

/// The Silero model, shared by any number of streams.
pub struct SileroVad {
    runner: Runner,
    model_path: PathBuf,
}

impl fmt::Debug for SileroVad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SileroVad")
            .field("backend", &self.backend())
            .field("model_path", &self.model_path)
            .finish_non_exhaustive()
    }
}

impl SileroVad {
    /// Load the model at `model_path` (Silero v5/v6 `silero_vad.onnx`) with
    /// the backend `options.backend` names.
    pub fn new(model_path: &Path, options: &SileroVadOptions) -> Result<Self, VadError> {
        if options.intra_op_threads == 0 {
            return Err(VadError::InvalidConfig(
                "intra_op_threads must be at least 1".to_owned(),
            ));
        }
        if options.backend != VadBackend::OnnxRuntime && !model_path.is_file() {
            return Err(VadError::ModelNotFound {
                path: model_path.to_path_buf(),
            });
        }
        let runner = match options.backend {
            VadBackend::Native => Runner::Native(Box::new(NativeSilero::load(model_path)?)),
            VadBackend::OnnxRuntime => Runner::OnnxRuntime(OrtSilero::new(model_path, options)?),
            VadBackend::Auto => match NativeSilero::load(model_path) {
                Ok(native) => Runner::Native(Box::new(native)),
                Err(e) if !onnxruntime_initialised() => {
                    return Err(VadError::Model(format!(
                        "{e}, but ONNX Runtime is not initialised: call init_onnxruntime first \
                         (Python: speech_to_speech.vad.init_onnxruntime())"
                    )));
                }
                Err(native) => {
                    tracing::info!(reason = %native, "falling back to ONNX Runtime for the VAD");
                    match OrtSilero::new(model_path, options) {
                        Ok(ort) => Runner::OnnxRuntime(ort),
                        // Neither backend can run it: say why for both.
                        Err(VadError::Model(ort)) => {
                            return Err(VadError::Model(format!("{native}; ONNX Runtime: {ort}")));
                        }
                        Err(e) => return Err(e),
                    }
                }
            },
        };
        Ok(Self {
            runner,
            model_path: model_path.to_path_buf(),
        })
    }

    /// The backend that runs the model: [`VadBackend::Native`] or
    /// [`VadBackend::OnnxRuntime`], never `Auto`.
    pub fn backend(&self) -> VadBackend {
        match self.runner {
            Runner::Native(_) => VadBackend::Native,
            Runner::OnnxRuntime(_) => VadBackend::OnnxRuntime,
        }
    }

    /// The file the model was loaded from.
    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// Speech probability of one chunk (`rate.chunk_len()` samples) of one stream.
    pub fn process(&mut self, state: &mut SileroState, chunk: &[f32]) -> Result<f32, VadError> {
        let mut prob = [0.0];
        self.process_batch(std::slice::from_mut(state), &[chunk], &mut prob)?;
        Ok(prob[0])
    }

    /// Speech probabilities of one chunk from each of several streams, in one
    /// model call. All states must share a sample rate; `chunks[i]` belongs
    /// to `states[i]` and `probs[i]` receives its probability.
    pub fn process_batch<S: AsMut<SileroState>>(
        &mut self,
        states: &mut [S],
        chunks: &[&[f32]],
        probs: &mut [f32],
    ) -> Result<(), VadError> {
        let batch = states.len();
        if batch == 0 {
            return Ok(());
        }
        if chunks.len() != batch || probs.len() != batch {
            return Err(VadError::InvalidInput(format!(
                "{batch} states, {} chunks and {} outputs: they must match",
                chunks.len(),
                probs.len()
            )));
        }
        let rate = states[0].as_mut().rate();
        if states.iter_mut().any(|s| s.as_mut().rate() != rate) {
            return Err(VadError::InvalidInput(
                "streams in one batch must share a sample rate".to_owned(),
            ));
        }
        let n = rate.chunk_len();
        if let Some(bad) = chunks.iter().find(|c| c.len() != n) {
            return Err(VadError::InvalidInput(format!(
                "a chunk at {} Hz must hold {n} samples, got {}",
                rate.hz(),
                bad.len()
            )));
        }
        match &mut self.runner {
            Runner::Native(m) => m.process_batch(rate, states, chunks, probs),
            Runner::OnnxRuntime(m) => m.process_batch(rate, states, chunks, probs),
        }
    }

    /// Per-chunk probabilities of a whole recording, from a fresh state. A
    /// last partial chunk is zero-padded, as Silero's own helpers do.
    pub fn speech_probabilities(
        &mut self,
        samples: &[f32],
        rate: SampleRate,
    ) -> Result<Vec<f32>, VadError> {
        let n = rate.chunk_len();
        let mut state = SileroState::new(rate);
        let mut probs = Vec::with_capacity(samples.len().div_ceil(n));
        let mut last = vec![0.0; n];
        for chunk in samples.chunks(n) {
            let chunk = if chunk.len() == n {
                chunk
            } else {
                last[..chunk.len()].copy_from_slice(chunk);
                &last[..]
            };
            probs.push(self.process(&mut state, chunk)?);
        }
        Ok(probs)
    }
}
