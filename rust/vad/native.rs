//! Silero VAD (v5/v6) computed in Rust, with the weights read from the model's ONNX file.
//!
//! This is a re-implementation of the network, not a general ONNX runtime:
//! it recognises the tensors of Silero's torch modules by name and shape
//! (`stft.forward_basis_buffer`, `encoder.N.reparam_conv.*`,
//! `decoder.rnn.*`, `decoder.decoder.2.*`), reads the convolutions' strides
//! and padding from the nodes that use them, and refuses a file that does
//! not fit, so the caller can fall back to ONNX Runtime. Per rate (8 and
//! 16 kHz, each its own set of weights) one chunk of one stream goes:
//!
//! 1. context + chunk, reflect-padded on the right by a quarter window;
//! 2. STFT as a strided product with the stored basis (real rows, then
//!    imaginary rows), then the magnitude of each bin;
//! 3. kernel-3 convolutions (padding 1), each clamped at zero (`ReLU`);
//! 4. one LSTM cell step on the single frame left, with the stream's state;
//! 5. `ReLU`, a 1x1 convolution and a sigmoid: the speech probability.
//!
//! All streams of a batch go through each layer together, so the weights
//! are read once per batch. Buffers grow to the largest batch seen and are
//! then reused: a call allocates nothing after warm-up.

use std::collections::HashMap;
use std::path::Path;

use super::error::VadError;
use super::kernels::{Columns, Dense, Kernel, LANES, round_up, sigmoid_scalar};
use super::onnx::{self, FLOAT, Graph, Model, Node, Tensor};
use super::rate::SampleRate;
use super::state::{STATE_WIDTH, SileroState};

/// Encoder layers read at most; Silero has four.
const MAX_LAYERS: usize = 16;
const STFT_BASIS: &str = "stft.forward_basis_buffer";
const LSTM_W_IH: &str = "decoder.rnn.weight_ih";
const LSTM_W_HH: &str = "decoder.rnn.weight_hh";
const LSTM_B_IH: &str = "decoder.rnn.bias_ih";
const LSTM_B_HH: &str = "decoder.rnn.bias_hh";
const HEAD_W: &str = "decoder.decoder.2.weight";
const HEAD_B: &str = "decoder.decoder.2.bias";

/// The Silero network for each rate the file has, and the kernel to run it with.
pub(crate) struct NativeSilero {
    kernel: Kernel,
    /// Index 0: 8 kHz, 1: 16 kHz.
    nets: [Option<Net>; 2],
}

impl std::fmt::Debug for NativeSilero {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeSilero")
            .field("kernel", &self.kernel)
            .field("8k", &self.nets[0].is_some())
            .field("16k", &self.nets[1].is_some())
            .finish()
    }
}

const fn slot(rate: SampleRate) -> usize {
    match rate {
        SampleRate::Hz8000 => 0,
        SampleRate::Hz16000 => 1,
    }
}

impl NativeSilero {
    /// Read the weights from `path`. A file that is not a Silero v5/v6 model
    /// with at least the 16 kHz network is [`VadError::Model`].
    pub fn load(path: &Path) -> Result<Self, VadError> {
        let bytes = std::fs::read(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                VadError::ModelNotFound {
                    path: path.to_path_buf(),
                }
            } else {
                VadError::Model(format!("{}: {e}", path.display()))
            }
        })?;
        let unrecognised = |reason: String| {
            VadError::Model(format!(
                "{} is not a Silero v5/v6 model the native VAD backend knows ({reason}); \
                 the onnxruntime backend may still run it",
                path.display()
            ))
        };
        let model = onnx::parse(&bytes).map_err(|e| unrecognised(e.to_string()))?;
        let nets = find_nets(&model).map_err(unrecognised)?;
        let kernel = Kernel::detect();
        tracing::debug!(path = %path.display(), ?kernel, "native Silero VAD loaded");
        Ok(Self { kernel, nets })
    }

    /// The same model computed by `kernel` instead of the detected one.
    #[cfg(test)]
    fn with_kernel(self, kernel: Kernel) -> Self {
        Self { kernel, ..self }
    }

    /// Speech probabilities of one chunk per stream, all at one rate, checked
    /// by the caller: `chunks[i]` is `rate.chunk_len()` samples of `states[i]`.
    pub fn process_batch<S: AsMut<SileroState>>(
        &mut self,
        rate: SampleRate,
        states: &mut [S],
        chunks: &[&[f32]],
        probs: &mut [f32],
    ) -> Result<(), VadError> {
        let kernel = self.kernel;
        let net = self.nets[slot(rate)].as_mut().ok_or_else(|| {
            VadError::Model(format!(
                "the model file has no {} Hz network; use the onnxruntime backend or resample",
                rate.hz()
            ))
        })?;
        if net.run(kernel, states, chunks, probs) {
            Ok(())
        } else {
            Err(VadError::Model(
                "native backend: a layer's buffers do not fit its weights".to_owned(),
            ))
        }
    }
}

/// One kernel-3 convolution with padding 1.
#[derive(Debug)]
struct Conv {
    /// Rows: output channels; columns: tap-major, `3 * cin`.
    dense: Dense,
    stride: usize,
    /// Input channels as stored (padded to whole lanes).
    cin: usize,
    frames_in: usize,
    frames_out: usize,
}

/// The network of one rate, and its buffers.
#[derive(Debug)]
struct Net {
    rate: SampleRate,
    hop: usize,
    bins: usize,
    /// Reflected samples after the chunk.
    pad: usize,
    frames: usize,
    /// `2 * bins` rows (real, then imaginary), `window` columns.
    stft: Dense,
    encoder: Vec<Conv>,
    /// Rows: the four gates (torch's order i, f, g, o); columns: the last
    /// encoder output (`lstm_x` wide, padded), then `h`.
    lstm: Dense,
    lstm_x: usize,
    head: Vec<f32>,
    head_bias: f32,
    scratch: Scratch,
}

/// Per-batch buffers, each holding one block per stream.
#[derive(Debug, Default)]
struct Scratch {
    batch: usize,
    signal: Vec<f32>,
    spectrum: Vec<f32>,
    /// The input of each encoder layer: frames with a zero frame on each side.
    layers: Vec<Vec<f32>>,
    lstm_in: Vec<f32>,
    gates: Vec<f32>,
}

impl Net {
    fn signal_len(&self) -> usize {
        self.rate.context_len() + self.rate.chunk_len() + self.pad
    }

    fn layer_len(conv: &Conv) -> usize {
        (conv.frames_in + 2) * conv.cin
    }

    /// Grow the buffers to hold `batch` streams. New space is zero, and the
    /// padding frames and channels are never written, so they stay zero.
    fn reserve(&mut self, batch: usize) {
        let signal_len = self.signal_len();
        let s = &mut self.scratch;
        if batch <= s.batch {
            return;
        }
        s.batch = batch;
        s.signal.resize(batch * signal_len, 0.0);
        s.spectrum
            .resize(batch * self.frames * self.stft.rows(), 0.0);
        s.layers.resize_with(self.encoder.len(), Vec::new);
        for (buf, conv) in s.layers.iter_mut().zip(&self.encoder) {
            buf.resize(batch * Self::layer_len(conv), 0.0);
        }
        s.lstm_in.resize(batch * self.lstm.k(), 0.0);
        s.gates.resize(batch * self.lstm.rows(), 0.0);
    }

    /// The forward pass; false if a buffer does not fit a layer (a bug).
    fn run<S: AsMut<SileroState>>(
        &mut self,
        kernel: Kernel,
        states: &mut [S],
        chunks: &[&[f32]],
        probs: &mut [f32],
    ) -> bool {
        let batch = states.len();
        self.reserve(batch);
        let (n, ctx) = (self.rate.chunk_len(), self.rate.context_len());
        let signal_len = self.signal_len();
        let Self {
            hop,
            bins,
            pad,
            frames,
            stft,
            encoder,
            lstm,
            lstm_x,
            head,
            head_bias,
            scratch: s,
            ..
        } = self;

        for ((row, state), chunk) in s
            .signal
            .chunks_exact_mut(signal_len)
            .zip(states.iter_mut())
            .zip(chunks)
        {
            row[..ctx].copy_from_slice(&state.as_mut().context[..ctx]);
            row[ctx..ctx + n].copy_from_slice(chunk);
            // Reflection leaves out the edge sample itself.
            for i in 0..*pad {
                row[ctx + n + i] = row[ctx + n - 2 - i];
            }
        }

        let spectrum_len = *frames * stft.rows();
        let ok = kernel.matmul(
            stft,
            false,
            &s.signal,
            &mut s.spectrum,
            Columns {
                groups: batch,
                per_group: *frames,
                x_group: signal_len,
                x_step: *hop,
                y_group: spectrum_len,
                y_step: stft.rows(),
                y_base: 0,
            },
        );
        if !ok {
            return false;
        }

        let Some(first) = encoder.first() else {
            return false;
        };
        let (cin0, len0) = (first.cin, Self::layer_len(first));
        for (spec, mag) in s
            .spectrum
            .chunks_exact(spectrum_len)
            .zip(s.layers[0].chunks_exact_mut(len0))
        {
            for (frame, out) in spec
                .chunks_exact(stft.rows())
                .zip(mag.chunks_exact_mut(cin0).skip(1))
            {
                let (re, im) = frame.split_at(*bins);
                for ((o, &r), &i) in out.iter_mut().zip(re).zip(&im[..*bins]) {
                    *o = (r * r + i * i).sqrt();
                }
            }
        }

        for (l, conv) in encoder.iter().enumerate() {
            let (inputs, outputs) = s.layers.split_at_mut(l + 1);
            let x = &inputs[l];
            let rows = conv.dense.rows();
            let (y, y_group, y_base) = match (outputs.first_mut(), encoder.get(l + 1)) {
                (Some(next), Some(next_conv)) => (next, Self::layer_len(next_conv), rows),
                _ => (&mut s.lstm_in, lstm.k(), 0),
            };
            let ok = kernel.matmul(
                &conv.dense,
                true,
                x,
                y,
                Columns {
                    groups: batch,
                    per_group: conv.frames_out,
                    x_group: Self::layer_len(conv),
                    x_step: conv.stride * conv.cin,
                    y_group,
                    y_step: rows,
                    y_base,
                },
            );
            if !ok {
                return false;
            }
        }

        for (row, state) in s.lstm_in.chunks_exact_mut(lstm.k()).zip(states.iter_mut()) {
            row[*lstm_x..].copy_from_slice(&state.as_mut().state[..STATE_WIDTH]);
        }
        let ok = kernel.matmul(
            lstm,
            false,
            &s.lstm_in,
            &mut s.gates,
            Columns {
                groups: batch,
                per_group: 1,
                x_group: lstm.k(),
                x_step: 0,
                y_group: lstm.rows(),
                y_step: 0,
                y_base: 0,
            },
        );
        if !ok {
            return false;
        }

        for (((gates, state), chunk), prob) in s
            .gates
            .chunks_exact(lstm.rows())
            .zip(states.iter_mut())
            .zip(chunks)
            .zip(probs.iter_mut())
        {
            let state = state.as_mut();
            let (h, c) = state.state.split_at_mut(STATE_WIDTH);
            kernel.lstm_cell(gates, h, c);
            let logit = head
                .iter()
                .zip(h.iter())
                .fold(*head_bias, |acc, (&w, &v)| acc + w * v.max(0.0));
            *prob = sigmoid_scalar(logit);
            state.context[..ctx].copy_from_slice(&chunk[n - ctx..]);
        }
        true
    }
}

/// Every float tensor of the model by the value name that carries it, and
/// the Conv and LSTM nodes, with the subgraph each tensor sits in.
#[derive(Default)]
struct Index<'m, 'a> {
    /// (subgraph, tensor)
    tensors: Vec<(usize, &'m Tensor<'a>)>,
    /// Value name -> position in `tensors`.
    values: HashMap<&'a str, usize>,
    convs: Vec<&'m Node<'a>>,
    lstms: Vec<&'m Node<'a>>,
    graphs: usize,
}

impl<'m, 'a> Index<'m, 'a> {
    fn add_graph(&mut self, graph: &'m Graph<'a>) {
        let scope = self.graphs;
        self.graphs += 1;
        for t in &graph.initializers {
            self.add_tensor(scope, t.name, t);
        }
        for node in &graph.nodes {
            match node.op_type {
                "Constant" => {
                    let value = node.attributes.iter().find(|a| a.name == "value");
                    if let (Some(t), Some(out)) =
                        (value.and_then(|a| a.tensor.as_ref()), node.outputs.first())
                    {
                        self.add_tensor(scope, out, t);
                    }
                }
                "Conv" => self.convs.push(node),
                "LSTM" => self.lstms.push(node),
                _ => {}
            }
            for g in node.attributes.iter().flat_map(|a| &a.graphs) {
                self.add_graph(g);
            }
        }
    }

    fn add_tensor(&mut self, scope: usize, value: &'a str, t: &'m Tensor<'a>) {
        if t.data_type == FLOAT {
            self.values.insert(value, self.tensors.len());
            self.tensors.push((scope, t));
        }
    }

    /// The tensor named `prefix + suffix` in `scope`.
    fn get(&self, scope: usize, prefix: &str, suffix: &str) -> Result<&'m Tensor<'a>, String> {
        self.tensors
            .iter()
            .find(|(sc, t)| *sc == scope && t.name.strip_prefix(prefix) == Some(suffix))
            .map(|(_, t)| *t)
            .ok_or_else(|| format!("no tensor {prefix}{suffix}"))
    }

    /// The settings of the Conv nodes that take `weight` as their weights;
    /// they must agree, and there must be one.
    fn conv_of(&self, weight: &Tensor<'_>) -> Result<ConvAttrs, String> {
        let mut found: Option<ConvAttrs> = None;
        for node in &self.convs {
            let uses = node
                .inputs
                .get(1)
                .and_then(|v| self.values.get(v))
                .is_some_and(|&i| std::ptr::eq(self.tensors[i].1, weight));
            if !uses {
                continue;
            }
            let attrs = ConvAttrs::of(node);
            if found.as_ref().is_some_and(|f| *f != attrs) {
                return Err(format!(
                    "{} is used by convolutions that differ",
                    weight.name
                ));
            }
            found = Some(attrs);
        }
        found.ok_or_else(|| format!("no convolution uses {}", weight.name))
    }
}

/// The settings of a 1-D Conv node (ONNX defaults where absent).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConvAttrs {
    strides: Vec<i64>,
    pads: Vec<i64>,
    dilations: Vec<i64>,
    group: i64,
}

impl ConvAttrs {
    fn of(node: &Node<'_>) -> Self {
        let ints = |name: &str, default: &[i64]| {
            node.attributes
                .iter()
                .find(|a| a.name == name)
                .map_or_else(|| default.to_vec(), |a| a.ints.clone())
        };
        Self {
            strides: ints("strides", &[1]),
            pads: ints("pads", &[0, 0]),
            dilations: ints("dilations", &[1]),
            group: node
                .attributes
                .iter()
                .find(|a| a.name == "group")
                .and_then(|a| a.int)
                .unwrap_or(1),
        }
    }

    /// The stride, if this is a plain 1-D convolution with `pad` on each side.
    fn stride_if_padded(&self, pad: i64) -> Option<usize> {
        let plain = self.pads == [pad, pad] && self.dilations == [1] && self.group == 1;
        match self.strides.as_slice() {
            [s] if plain && *s >= 1 => usize::try_from(*s).ok(),
            _ => None,
        }
    }
}

fn dims(t: &Tensor<'_>) -> Vec<usize> {
    t.dims
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
        .collect()
}

/// A float tensor of exactly `want` dims.
fn values(t: &Tensor<'_>, want: &[usize]) -> Result<Vec<f32>, String> {
    if dims(t) != want {
        return Err(format!("{} has shape {:?}, not {want:?}", t.name, t.dims));
    }
    t.to_f32()
}

/// The networks in `model`: one per STFT basis of a known window size.
fn find_nets(model: &Model<'_>) -> Result<[Option<Net>; 2], String> {
    let mut index = Index::default();
    index.add_graph(&model.graph);
    let mut nets: [Option<Net>; 2] = [None, None];
    let bases: Vec<(usize, &str)> = index
        .tensors
        .iter()
        .filter_map(|(scope, t)| Some((*scope, t.name.strip_suffix(STFT_BASIS)?)))
        .collect();
    for (scope, prefix) in bases {
        let net = build_net(&index, scope, prefix)?;
        let i = slot(net.rate);
        if nets[i].is_some() {
            return Err(format!("two {} Hz networks", net.rate.hz()));
        }
        nets[i] = Some(net);
    }
    if nets[slot(SampleRate::Hz16000)].is_none() {
        return Err("no 16 kHz network (an STFT basis 256 samples wide)".to_owned());
    }
    Ok(nets)
}

/// The network whose tensors are named `prefix...` in subgraph `scope`.
fn build_net(index: &Index<'_, '_>, scope: usize, prefix: &str) -> Result<Net, String> {
    let get = |suffix: &str| index.get(scope, prefix, suffix);

    let basis = get(STFT_BASIS)?;
    let window = match dims(basis).as_slice() {
        [_, 1, w] => *w,
        _ => return Err(format!("{STFT_BASIS} has shape {:?}", basis.dims)),
    };
    // The chunk is two windows long at both rates.
    let rate = [SampleRate::Hz8000, SampleRate::Hz16000]
        .into_iter()
        .find(|r| r.chunk_len() == 2 * window)
        .ok_or_else(|| format!("an STFT window of {window} samples fits no known rate"))?;
    let bins = window / 2 + 1;
    let basis_values = values(basis, &[2 * bins, 1, window])?;
    let hop = index
        .conv_of(basis)?
        .stride_if_padded(0)
        .ok_or("the STFT convolution has padding, dilation or groups")?;
    let pad = window / 4;
    let signal_len = rate.context_len() + rate.chunk_len() + pad;
    let frames = signal_len
        .checked_sub(window)
        .ok_or("the STFT window is longer than the signal")?
        / hop
        + 1;
    let stft = Dense::new(
        2 * bins,
        window,
        |r, c| basis_values[r * window + c],
        |_| 0.0,
    );

    let mut encoder = Vec::new();
    let (mut channels, mut frames_in) = (bins, frames);
    while encoder.len() < MAX_LAYERS {
        let l = encoder.len();
        let Ok(weight) = get(&format!("encoder.{l}.reparam_conv.weight")) else {
            break;
        };
        let cout = dims(weight).first().copied().unwrap_or(0);
        let w = values(weight, &[cout, channels, 3])?;
        let b = values(get(&format!("encoder.{l}.reparam_conv.bias"))?, &[cout])?;
        let stride = index
            .conv_of(weight)?
            .stride_if_padded(1)
            .ok_or_else(|| format!("encoder.{l} is not a kernel-3 convolution padded by 1"))?;
        let cin = round_up(channels, LANES);
        let dense = Dense::new(
            cout,
            3 * cin,
            |r, col| {
                let (tap, ci) = (col / cin, col % cin);
                if ci < channels {
                    w[(r * channels + ci) * 3 + tap]
                } else {
                    0.0
                }
            },
            |r| b[r],
        );
        let frames_out = (frames_in - 1) / stride + 1;
        encoder.push(Conv {
            dense,
            stride,
            cin,
            frames_in,
            frames_out,
        });
        (channels, frames_in) = (cout, frames_out);
    }
    if encoder.is_empty() {
        return Err("no encoder.0.reparam_conv.weight".to_owned());
    }
    if frames_in != 1 {
        return Err(format!("the encoder leaves {frames_in} frames, not 1"));
    }

    let hidden = STATE_WIDTH;
    let w_ih = values(get(LSTM_W_IH)?, &[4 * hidden, channels])?;
    let w_hh = values(get(LSTM_W_HH)?, &[4 * hidden, hidden])?;
    let b_ih = values(get(LSTM_B_IH)?, &[4 * hidden])?;
    let b_hh = values(get(LSTM_B_HH)?, &[4 * hidden])?;
    let has_lstm = index.lstms.iter().any(|node| {
        node.attributes
            .iter()
            .any(|a| a.name == "hidden_size" && a.int == Some(hidden as i64))
    });
    if !has_lstm {
        return Err(format!("no LSTM node with hidden_size {hidden}"));
    }
    let lstm_x = round_up(channels, LANES);
    let lstm = Dense::new(
        4 * hidden,
        lstm_x + hidden,
        |r, c| {
            if c < channels {
                w_ih[r * channels + c]
            } else if c >= lstm_x {
                w_hh[r * hidden + c - lstm_x]
            } else {
                0.0
            }
        },
        |r| b_ih[r] + b_hh[r],
    );

    let head_weight = get(HEAD_W)?;
    let head = values(head_weight, &[1, hidden, 1])?;
    if index.conv_of(head_weight)?.stride_if_padded(0) != Some(1) {
        return Err("the output layer is not a 1x1 convolution".to_owned());
    }
    let head_bias = values(get(HEAD_B)?, &[1])?[0];

    Ok(Net {
        rate,
        hop,
        bins,
        pad,
        frames,
        stft,
        encoder,
        lstm,
        lstm_x,
        head,
        head_bias,
        scratch: Scratch::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `S2S_VAD_MODEL`, else the file `.ci/setup` installs into `.venv`.
    fn model_path() -> Option<std::path::PathBuf> {
        if let Some(path) = std::env::var_os("S2S_VAD_MODEL") {
            return Some(path.into());
        }
        let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
        std::fs::read_dir(lib)
            .ok()?
            .flatten()
            .map(|python| {
                python
                    .path()
                    .join("site-packages/silero_vad/data/silero_vad.onnx")
            })
            .find(|p| p.is_file())
    }

    #[test]
    fn portable_and_detected_kernels_agree_on_the_real_model() {
        let Some(path) = model_path() else {
            eprintln!("skipped: no silero_vad.onnx (set S2S_VAD_MODEL or run .ci/setup)");
            return;
        };
        let mut fast = NativeSilero::load(&path).unwrap();
        let mut portable = NativeSilero::load(&path)
            .unwrap()
            .with_kernel(Kernel::Portable);
        for rate in [SampleRate::Hz16000, SampleRate::Hz8000] {
            let n = rate.chunk_len();
            let (mut a, mut b) = ([SileroState::new(rate)], [SileroState::new(rate)]);
            let mut max_diff = 0.0_f32;
            for k in 0..40 {
                // A chirp with a burst of noise: the state sees speech-like energy.
                let chunk: Vec<f32> = (0..n)
                    .map(|i| {
                        let t = (k * n + i) as f32 / rate.hz() as f32;
                        let noise = ((i * 7919 + k * 104_729) % 1000) as f32 / 1000.0 - 0.5;
                        0.3 * (t * (300.0 + 900.0 * t) * std::f32::consts::TAU).sin()
                            + if k % 8 < 3 { 0.2 * noise } else { 0.0 }
                    })
                    .collect();
                let (mut pa, mut pb) = ([0.0], [0.0]);
                fast.process_batch(rate, &mut a, &[&chunk], &mut pa)
                    .unwrap();
                portable
                    .process_batch(rate, &mut b, &[&chunk], &mut pb)
                    .unwrap();
                max_diff = max_diff.max((pa[0] - pb[0]).abs());
            }
            assert!(max_diff <= 1e-5, "{rate:?}: {max_diff}");
        }
    }
}
