//! Smart Turn v3: a learned end-of-turn model on the last 8 s of a turn's audio, over ONNX Runtime.
//!
//! The model (`smart-turn-v3.2-cpu.onnx`, shipped in the `pipecat-ai`
//! wheel) takes `input_features` `[1, 80, 800]`, the log-mel features of
//! [`super::mel`], and returns `logits` `[1, 1]`. Despite the name the value
//! is already a probability (the graph ends in a sigmoid): the probability
//! that the speaker has finished their turn. Above [`DEFAULT_THRESHOLD`] the
//! turn is complete.

use std::path::{Path, PathBuf};

use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session};
use ort::value::Tensor;

use super::error::VadError;
use super::mel::{FEATURES_LEN, LogMel, N_FRAMES, N_MELS};
use super::onnxruntime::{environment, open_session, outlet_names};

/// Probability above which a turn is complete (the model's own cut-off).
pub const DEFAULT_THRESHOLD: f32 = 0.5;

const INPUT: &str = "input_features";
const OUTPUT: &str = "logits";

/// What the model says about the audio so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnVerdict {
    /// Probability that the turn is over, in `[0, 1]`.
    pub probability: f32,
    /// `probability > threshold`.
    pub complete: bool,
}

/// How to run the model.
#[derive(Debug, Clone, PartialEq)]
pub struct SmartTurnOptions {
    /// ONNX Runtime intra-op threads (1 or 2 on a small CPU).
    pub intra_op_threads: usize,
    /// Let ONNX Runtime's worker threads spin between calls. Off by default:
    /// decisions are seconds apart and the cores are needed by STT and the LLM.
    pub allow_spinning: bool,
    /// Probability above which the turn counts as complete.
    pub threshold: f32,
}

impl Default for SmartTurnOptions {
    fn default() -> Self {
        Self {
            intra_op_threads: 1,
            allow_spinning: false,
            threshold: DEFAULT_THRESHOLD,
        }
    }
}

/// The Smart Turn v3 model with its front end and buffers: one decision at a time.
pub struct SmartTurn {
    session: Session,
    mel: LogMel,
    /// `[1, N_MELS, N_FRAMES]`, rewritten by every decision.
    input: Tensor<f32>,
    /// The `[1, 1]` output, preallocated.
    run_options: RunOptions<HasSelectedOutputs>,
    threshold: f32,
    model_path: PathBuf,
}

impl std::fmt::Debug for SmartTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmartTurn")
            .field("model_path", &self.model_path)
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl SmartTurn {
    /// Load the model at `model_path` with `threads` intra-op threads and the
    /// other options at their defaults. ONNX Runtime must be initialised
    /// ([`super::init_onnxruntime`]).
    pub fn load(model_path: &Path, threads: usize) -> Result<Self, VadError> {
        Self::with_options(
            model_path,
            &SmartTurnOptions {
                intra_op_threads: threads,
                ..SmartTurnOptions::default()
            },
        )
    }

    /// Load the model at `model_path` with `options`.
    pub fn with_options(model_path: &Path, options: &SmartTurnOptions) -> Result<Self, VadError> {
        if !(options.threshold > 0.0 && options.threshold < 1.0) {
            return Err(VadError::InvalidConfig(format!(
                "threshold must be in (0, 1), got {}",
                options.threshold
            )));
        }
        if options.intra_op_threads == 0 {
            return Err(VadError::InvalidConfig(
                "intra_op_threads must be at least 1".to_owned(),
            ));
        }
        let env = environment().ok_or(VadError::OnnxRuntimeNotInitialised)?;
        if !model_path.is_file() {
            return Err(VadError::TurnModelNotFound {
                path: model_path.to_path_buf(),
            });
        }
        let session = open_session(
            env,
            model_path,
            options.intra_op_threads,
            options.allow_spinning,
        )?;
        let (inputs, outputs) = outlet_names(&session);
        if inputs != [INPUT] || !outputs.contains(&OUTPUT) {
            return Err(VadError::Model(format!(
                "{} is not a Smart Turn v3 model: inputs {inputs:?}, outputs {outputs:?} \
                 (expected [{INPUT:?}] and {OUTPUT:?})",
                model_path.display()
            )));
        }
        let run_options = RunOptions::new()?.with_outputs(
            OutputSelector::no_default()
                .with(OUTPUT)
                .preallocate(OUTPUT, Tensor::from_array(([1_usize, 1], vec![0.0_f32]))?),
        );
        Ok(Self {
            session,
            mel: LogMel::new(),
            input: Tensor::from_array(([1, N_MELS, N_FRAMES], vec![0.0_f32; FEATURES_LEN]))?,
            run_options,
            threshold: options.threshold,
            model_path: model_path.to_path_buf(),
        })
    }

    /// The verdict on a turn whose audio so far is `audio_16k` (16 kHz; the
    /// last 8 s are used, a shorter turn is padded). Pass the turn from a
    /// little before its speech began up to now, pause included.
    pub fn predict(&mut self, audio_16k: &[f32]) -> Result<TurnVerdict, VadError> {
        self.mel
            .compute(audio_16k, self.input.extract_tensor_mut().1)?;
        self.run()
    }

    /// The verdict on features already computed by [`LogMel::compute`]
    /// (`[N_MELS, N_FRAMES]`): the model alone, for measuring it.
    pub fn predict_features(&mut self, features: &[f32]) -> Result<TurnVerdict, VadError> {
        if features.len() != FEATURES_LEN {
            return Err(VadError::InvalidInput(format!(
                "features must hold {N_MELS} x {N_FRAMES} = {FEATURES_LEN} values, got {}",
                features.len()
            )));
        }
        self.input.extract_tensor_mut().1.copy_from_slice(features);
        self.run()
    }

    fn run(&mut self) -> Result<TurnVerdict, VadError> {
        let outputs = self
            .session
            .run_with_options([(&self.input).into()], &self.run_options)?;
        let (_, value) = outputs[OUTPUT].try_extract_tensor::<f32>()?;
        let probability = match value {
            [p] if p.is_finite() => *p,
            _ => {
                return Err(VadError::Model(format!(
                    "Smart Turn returned {value:?}, not one probability"
                )));
            }
        };
        Ok(TurnVerdict {
            probability,
            complete: probability > self.threshold,
        })
    }

    /// The model file.
    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// Probability above which a turn is complete.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }
}
