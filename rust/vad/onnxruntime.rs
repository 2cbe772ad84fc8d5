//! The ONNX Runtime engine of the Silero VAD: one shared session, batched across streams.
//!
//! ONNX Runtime is loaded at run time from a shared library (the `onnxruntime`
//! wheel's `capi/libonnxruntime.so.*`), once per process, by
//! [`init_onnxruntime`]. Every ort call goes through an [`OrtSilero`], which
//! can only be built after that, so a missing library is an error at start-up
//! and never a panic inside ort.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::Tensor;

use super::error::VadError;
use super::rate::SampleRate;
use super::state::{STATE_WIDTH, SileroState, SileroVadOptions};

/// Batch shapes kept allocated; older ones are dropped past this.
const MAX_CACHED_SHAPES: usize = 8;

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Load ONNX Runtime from `library` (e.g. `.../onnxruntime/capi/libonnxruntime.so.1.22.0`).
///
/// Call once per process before building a [`SileroVad`]; later calls are
/// no-ops (the first library loaded stays).
pub fn init_onnxruntime(library: &Path) -> Result<(), VadError> {
    if ENVIRONMENT.get().is_some() {
        return Ok(());
    }
    let _guard = INIT_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if ENVIRONMENT.get().is_some() {
        return Ok(());
    }
    let not_found = |reason: String| VadError::OnnxRuntimeNotFound {
        path: library.to_path_buf(),
        reason,
    };
    if !library.is_file() {
        return Err(not_found("no such file".to_owned()));
    }
    let env = ort::init_from(library)
        .map_err(|e| not_found(e.to_string()))?
        .with_name("speech-to-speech")
        .with_telemetry(false)
        .build()
        .map_err(|e| not_found(e.to_string()))?;
    tracing::debug!(library = %library.display(), "ONNX Runtime loaded");
    // Only this function sets it, under INIT_LOCK.
    let _ = ENVIRONMENT.set(env);
    Ok(())
}

/// True once [`init_onnxruntime`] has succeeded.
pub fn onnxruntime_initialised() -> bool {
    ENVIRONMENT.get().is_some()
}

/// The runtime loaded by [`init_onnxruntime`], for the other models run on it.
pub(crate) fn environment() -> Option<&'static Environment> {
    ENVIRONMENT.get()
}

/// A session for the model at `model_path` as every model here runs:
/// `threads` intra-op threads, one inter-op thread, sequential execution,
/// every graph optimisation, and spinning only when `allow_spinning`.
pub(crate) fn open_session(
    env: &Environment,
    model_path: &Path,
    threads: usize,
    allow_spinning: bool,
) -> Result<Session, VadError> {
    let builder_err =
        |e: ort::Error<ort::session::builder::SessionBuilder>| VadError::Model(e.to_string());
    let spin = if allow_spinning { "1" } else { "0" };
    let mut builder = Session::builder(env)?
        .with_intra_threads(threads)
        .map_err(builder_err)?
        .with_inter_threads(1)
        .map_err(builder_err)?
        .with_parallel_execution(false)
        .map_err(builder_err)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(builder_err)?
        .with_config_entry("session.intra_op.allow_spinning", spin)
        .map_err(builder_err)?
        .with_config_entry("session.inter_op.allow_spinning", spin)
        .map_err(builder_err)?;
    Ok(builder.commit_from_file(model_path)?)
}

/// The names of a session's inputs and outputs, in the model's order.
pub(crate) fn outlet_names(session: &Session) -> (Vec<&str>, Vec<&str>) {
    fn names(outlets: &[ort::value::Outlet]) -> Vec<&str> {
        outlets.iter().map(ort::value::Outlet::name).collect()
    }
    (names(session.inputs()), names(session.outputs()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Input,
    State,
    Sr,
}

/// Preallocated input tensors for one (rate, batch size).
struct BatchBuffers {
    rate: SampleRate,
    batch: usize,
    /// `[batch, context + chunk]`
    input: Tensor<f32>,
    /// `[2, batch, 128]`
    state: Tensor<f32>,
    /// Outputs preallocated here, so a run allocates no output tensors.
    run_options: RunOptions<HasSelectedOutputs>,
}

/// The Silero model in one ONNX Runtime session.
pub(crate) struct OrtSilero {
    session: Session,
    /// Which of our tensors goes to each model input, in the model's order.
    slots: [Slot; 3],
    /// Positions of `output` and `stateN` among the model's outputs.
    outputs: [usize; 2],
    sr_8k: Tensor<i64>,
    sr_16k: Tensor<i64>,
    buffers: Vec<BatchBuffers>,
    model_path: PathBuf,
}

impl std::fmt::Debug for OrtSilero {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtSilero")
            .field("model_path", &self.model_path)
            .finish_non_exhaustive()
    }
}

impl OrtSilero {
    /// Load the model at `model_path` (Silero v5/v6 `silero_vad.onnx`).
    pub(crate) fn new(model_path: &Path, options: &SileroVadOptions) -> Result<Self, VadError> {
        let env = ENVIRONMENT
            .get()
            .ok_or(VadError::OnnxRuntimeNotInitialised)?;
        if !model_path.is_file() {
            return Err(VadError::ModelNotFound {
                path: model_path.to_path_buf(),
            });
        }
        if options.intra_op_threads == 0 {
            return Err(VadError::InvalidConfig(
                "intra_op_threads must be at least 1".to_owned(),
            ));
        }
        let session = open_session(
            env,
            model_path,
            options.intra_op_threads,
            options.allow_spinning,
        )?;
        let (inputs, outputs) = outlet_names(&session);
        let find = |names: &[&str], name: &str| names.iter().position(|n| *n == name);
        let slots = inputs
            .iter()
            .map(|n| match *n {
                "input" => Some(Slot::Input),
                "state" => Some(Slot::State),
                "sr" => Some(Slot::Sr),
                _ => None,
            })
            .collect::<Option<Vec<_>>>();
        let (Some(slots), Some(out_prob), Some(out_state)) = (
            slots.filter(|s| s.len() == 3),
            find(&outputs, "output"),
            find(&outputs, "stateN"),
        ) else {
            return Err(VadError::Model(format!(
                "{} is not a Silero v5/v6 model: inputs {inputs:?}, outputs {outputs:?}",
                model_path.display()
            )));
        };
        let slots = [slots[0], slots[1], slots[2]];
        if !(slots.contains(&Slot::Input)
            && slots.contains(&Slot::State)
            && slots.contains(&Slot::Sr))
        {
            return Err(VadError::Model(format!(
                "{} is not a Silero v5/v6 model: inputs {inputs:?}",
                model_path.display()
            )));
        }
        Ok(Self {
            session,
            slots,
            outputs: [out_prob, out_state],
            sr_8k: Tensor::from_array(((), vec![8000_i64]))?,
            sr_16k: Tensor::from_array(((), vec![16000_i64]))?,
            buffers: Vec::new(),
            model_path: model_path.to_path_buf(),
        })
    }

    /// Speech probabilities of one chunk per stream, all at one rate, checked
    /// by the caller: `chunks[i]` is `rate.chunk_len()` samples of `states[i]`.
    pub(crate) fn process_batch<S: AsMut<SileroState>>(
        &mut self,
        rate: SampleRate,
        states: &mut [S],
        chunks: &[&[f32]],
        probs: &mut [f32],
    ) -> Result<(), VadError> {
        let batch = states.len();
        let (n, ctx) = (rate.chunk_len(), rate.context_len());
        let index = self.buffers_for(rate, batch)?;
        let Self {
            session,
            slots,
            outputs: [out_prob, out_state],
            sr_8k,
            sr_16k,
            buffers,
            ..
        } = self;
        let bufs = &mut buffers[index];
        {
            let (_, input) = bufs.input.extract_tensor_mut();
            for ((row, s), chunk) in input
                .chunks_exact_mut(ctx + n)
                .zip(states.iter_mut())
                .zip(chunks)
            {
                let s = s.as_mut();
                row[..ctx].copy_from_slice(&s.context[..ctx]);
                row[ctx..].copy_from_slice(chunk);
            }
            let (_, state) = bufs.state.extract_tensor_mut();
            let (h, c) = state.split_at_mut(batch * STATE_WIDTH);
            for (i, s) in states.iter_mut().enumerate() {
                let s = s.as_mut();
                let rows = i * STATE_WIDTH..(i + 1) * STATE_WIDTH;
                h[rows.clone()].copy_from_slice(&s.state[..STATE_WIDTH]);
                c[rows].copy_from_slice(&s.state[STATE_WIDTH..]);
            }
        }
        let sr = match rate {
            SampleRate::Hz8000 => &*sr_8k,
            SampleRate::Hz16000 => &*sr_16k,
        };
        let value = |slot: Slot| -> SessionInputValue<'_> {
            match slot {
                Slot::Input => (&bufs.input).into(),
                Slot::State => (&bufs.state).into(),
                Slot::Sr => sr.into(),
            }
        };
        let outputs = session.run_with_options(
            [value(slots[0]), value(slots[1]), value(slots[2])],
            &bufs.run_options,
        )?;
        let (_, out) = outputs[*out_prob].try_extract_tensor::<f32>()?;
        let (_, new_state) = outputs[*out_state].try_extract_tensor::<f32>()?;
        if out.len() != batch || new_state.len() != 2 * batch * STATE_WIDTH {
            return Err(VadError::Model(format!(
                "unexpected output sizes {} and {} for a batch of {batch}",
                out.len(),
                new_state.len()
            )));
        }
        probs.copy_from_slice(out);
        let (h, c) = new_state.split_at(batch * STATE_WIDTH);
        for ((i, s), chunk) in states.iter_mut().enumerate().zip(chunks) {
            let s = s.as_mut();
            let rows = i * STATE_WIDTH..(i + 1) * STATE_WIDTH;
            s.state[..STATE_WIDTH].copy_from_slice(&h[rows.clone()]);
            s.state[STATE_WIDTH..].copy_from_slice(&c[rows]);
            s.context[..ctx].copy_from_slice(&chunk[n - ctx..]);
        }
        Ok(())
    }

    /// The index of preallocated buffers for this shape, made on first use.
    fn buffers_for(&mut self, rate: SampleRate, batch: usize) -> Result<usize, VadError> {
        if let Some(i) = self
            .buffers
            .iter()
            .position(|b| b.rate == rate && b.batch == batch)
        {
            return Ok(i);
        }
        if self.buffers.len() >= MAX_CACHED_SHAPES {
            self.buffers.remove(0);
        }
        let width = rate.context_len() + rate.chunk_len();
        let state_len = 2 * batch * STATE_WIDTH;
        let outputs = OutputSelector::default()
            .preallocate(
                "output",
                Tensor::from_array(([batch, 1], vec![0.0_f32; batch]))?,
            )
            .preallocate(
                "stateN",
                Tensor::from_array(([2, batch, STATE_WIDTH], vec![0.0_f32; state_len]))?,
            );
        self.buffers.push(BatchBuffers {
            rate,
            batch,
            input: Tensor::from_array(([batch, width], vec![0.0_f32; batch * width]))?,
            state: Tensor::from_array(([2, batch, STATE_WIDTH], vec![0.0_f32; state_len]))?,
            run_options: RunOptions::new()?.with_outputs(outputs),
        });
        Ok(self.buffers.len() - 1)
    }
}
