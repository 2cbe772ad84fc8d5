//! Bindings for the audio front end: echo canceller, noise suppressor and audio devices.

use std::time::Duration;

use std::sync::{Mutex, MutexGuard, PoisonError};

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::audio::aec::EchoCanceller;
use crate::audio::device::{
    AudioInput, AudioOutput, DeviceError, ReferenceTap, StreamInfo, StreamOptions, list_devices,
};
use crate::audio::ns::{NoiseSuppressor, NsPreset};

/// Copy a numpy array's samples out (contiguous or not).
fn samples_of(array: &PyReadonlyArray1<'_, f32>) -> Vec<f32> {
    match array.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => array.as_array().iter().copied().collect(),
    }
}

fn timeout_of(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    seconds
        .map(|s| {
            Duration::try_from_secs_f64(s.max(0.0)).map_err(|e| {
                pyo3::exceptions::PyValueError::new_err(format!("bad timeout {s}: {e}"))
            })
        })
        .transpose()
}

/// Acoustic echo canceller (WebRTC AEC3) for one mono float32 stream.
///
/// Give it what the speaker played with `push_far_end` (any length) and run
/// each captured 10 ms frame (or several) through `process`. The output
/// lags the capture by `latency` samples.
#[pyclass(name = "EchoCanceller", module = "speech_to_speech._core")]
pub struct PyEchoCanceller {
    // AEC3's near-end detector is `Send` but not `Sync`; the mutex makes the
    // class shareable and is never contended (methods take `&mut self` or
    // are called by the one `AudioOutput` feeding it).
    inner: Mutex<EchoCanceller>,
    out: Vec<f32>,
}

impl PyEchoCanceller {
    fn aec(&self) -> MutexGuard<'_, EchoCanceller> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[pymethods]
impl PyEchoCanceller {
    #[new]
    #[pyo3(signature = (*, sample_rate = 16000))]
    fn new(sample_rate: u32) -> PyResult<Self> {
        Ok(Self {
            inner: Mutex::new(EchoCanceller::new(sample_rate)?),
            out: Vec::new(),
        })
    }

    /// Feed far-end (speaker) samples, any length.
    fn push_far_end(&mut self, py: Python<'_>, samples: PyReadonlyArray1<'_, f32>) {
        let samples = samples_of(&samples);
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        py.detach(|| inner.push_far_end(&samples));
    }

    /// Remove the echo from whole 10 ms frames of microphone capture.
    fn process<'py>(
        &mut self,
        py: Python<'py>,
        mic: PyReadonlyArray1<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let mic = samples_of(&mic);
        self.out.resize(mic.len(), 0.0);
        let inner = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        let out = &mut self.out;
        py.detach(|| inner.process_into(&mic, out))?;
        Ok(PyArray1::from_slice(py, &self.out))
    }

    /// Sample rate in Hz.
    #[getter]
    fn sample_rate(&self) -> u32 {
        self.aec().sample_rate()
    }

    /// Samples in one 10 ms frame.
    #[getter]
    fn frame_len(&self) -> usize {
        self.aec().frame_len()
    }

    /// Samples the output lags the capture.
    #[getter]
    fn latency(&self) -> usize {
        self.aec().latency()
    }

    /// AEC3's own estimates: `echo_return_loss_db`, `erle_db`, `delay_ms`.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let m = self.aec().metrics();
        let d = PyDict::new(py);
        d.set_item("echo_return_loss_db", m.echo_return_loss_db)?;
        d.set_item("erle_db", m.erle_db)?;
        d.set_item("delay_ms", m.delay_ms)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!("EchoCanceller(sample_rate={})", self.aec().sample_rate())
    }
}

/// RNNoise noise suppressor for one mono float32 stream at any supported rate.
///
/// `process` returns as many samples as it is given: the denoised input,
/// `latency` samples late (plus RNNoise's own 10 ms).
#[pyclass(name = "NoiseSuppressor", module = "speech_to_speech._core")]
pub struct PyNoiseSuppressor {
    inner: NoiseSuppressor,
    out: Vec<f32>,
}

#[pymethods]
impl PyNoiseSuppressor {
    #[new]
    #[pyo3(signature = (*, sample_rate = 16000, r#type = "near_field"))]
    fn new(sample_rate: u32, r#type: &str) -> PyResult<Self> {
        let preset: NsPreset = r#type.parse()?;
        Ok(Self {
            inner: NoiseSuppressor::new(sample_rate, preset)?,
            out: Vec::new(),
        })
    }

    /// Denoise the next chunk (any length).
    fn process<'py>(
        &mut self,
        py: Python<'py>,
        samples: PyReadonlyArray1<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let samples = samples_of(&samples);
        self.out.resize(samples.len(), 0.0);
        let (inner, out) = (&mut self.inner, &mut self.out);
        py.detach(|| inner.process_into(&samples, out))?;
        Ok(PyArray1::from_slice(py, &self.out))
    }

    /// Forget the stream.
    fn reset(&mut self) {
        self.inner.reset();
    }

    /// Sample rate in Hz.
    #[getter]
    fn sample_rate(&self) -> u32 {
        self.inner.sample_rate()
    }

    /// `near_field` or `far_field`.
    #[getter]
    fn r#type(&self) -> &'static str {
        self.inner.preset().as_str()
    }

    /// Samples the output lags the input (besides RNNoise's 10 ms).
    #[getter]
    fn latency(&self) -> usize {
        self.inner.latency()
    }

    /// RNNoise's speech probability for the last 10 ms.
    #[getter]
    fn speech_probability(&self) -> f32 {
        self.inner.speech_probability()
    }

    fn __repr__(&self) -> String {
        format!(
            "NoiseSuppressor(sample_rate={}, type={:?})",
            self.inner.sample_rate(),
            self.inner.preset().as_str()
        )
    }
}

/// Every audio device the host lists: `index`, `name`, `description`,
/// `is_input`, `is_output`, `default_input`, `default_output`.
#[pyfunction]
pub fn list_audio_devices(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    let devices = py.detach(list_devices)?;
    devices
        .into_iter()
        .map(|d| {
            let dict = PyDict::new(py);
            dict.set_item("index", d.index)?;
            dict.set_item("name", d.name)?;
            dict.set_item("description", d.description)?;
            dict.set_item("is_input", d.is_input)?;
            dict.set_item("is_output", d.is_output)?;
            dict.set_item("default_input", d.default_input)?;
            dict.set_item("default_output", d.default_output)?;
            Ok(dict)
        })
        .collect()
}

fn options(
    device: Option<String>,
    sample_rate: u32,
    device_rate: Option<u32>,
    buffer_ms: u32,
) -> StreamOptions {
    StreamOptions {
        device,
        sample_rate,
        device_rate,
        buffer_ms,
    }
}

fn info_dict<'py>(py: Python<'py>, info: &StreamInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("device", &info.device)?;
    d.set_item("sample_rate", info.sample_rate)?;
    d.set_item("device_rate", info.device_rate)?;
    d.set_item("channels", info.channels)?;
    d.set_item("sample_format", &info.sample_format)?;
    Ok(d)
}

/// A microphone stream: mono float32 at `sample_rate`, resampled from the
/// device's rate when they differ. Capture runs in Rust; `read` waits with
/// the GIL released.
#[pyclass(name = "AudioInput", module = "speech_to_speech._core")]
pub struct PyAudioInput {
    inner: AudioInput,
    buf: Vec<f32>,
}

#[pymethods]
impl PyAudioInput {
    #[new]
    #[pyo3(signature = (*, device = None, sample_rate = 16000, device_rate = None, buffer_ms = 1000))]
    fn new(
        py: Python<'_>,
        device: Option<String>,
        sample_rate: u32,
        device_rate: Option<u32>,
        buffer_ms: u32,
    ) -> PyResult<Self> {
        let opts = options(device, sample_rate, device_rate, buffer_ms);
        let inner = py.detach(|| AudioInput::open(&opts))?;
        Ok(Self {
            inner,
            buf: Vec::new(),
        })
    }

    /// Read `n` samples, waiting up to `timeout` seconds (None: until there
    /// are `n`). Returns fewer only on timeout.
    #[pyo3(signature = (n, timeout = None))]
    fn read<'py>(
        &mut self,
        py: Python<'py>,
        n: usize,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let timeout = timeout_of(timeout)?;
        self.buf.resize(n, 0.0);
        let (inner, buf) = (&mut self.inner, &mut self.buf);
        let got = py.detach(|| inner.read(buf, timeout))?;
        Ok(PyArray1::from_slice(py, &self.buf[..got]))
    }

    /// `device`, `sample_rate`, `device_rate`, `channels`, `sample_format`.
    #[getter]
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        info_dict(py, self.inner.info())
    }

    /// Device samples dropped because reads fell behind.
    #[getter]
    fn overruns(&self) -> u64 {
        self.inner.overruns()
    }

    /// Stop capturing; later reads return what is left, then fail.
    fn close(&mut self) {
        self.inner.close();
    }
}

/// A speaker stream: write mono float32 at `sample_rate`. With a
/// `reference_rate`, what is played can feed an `EchoCanceller` at that
/// rate (`feed_reference`).
#[pyclass(name = "AudioOutput", module = "speech_to_speech._core")]
pub struct PyAudioOutput {
    inner: AudioOutput,
    reference: Option<ReferenceTap>,
}

#[pymethods]
impl PyAudioOutput {
    #[new]
    #[pyo3(signature = (*, device = None, sample_rate = 16000, device_rate = None, buffer_ms = 1000, reference_rate = None))]
    fn new(
        py: Python<'_>,
        device: Option<String>,
        sample_rate: u32,
        device_rate: Option<u32>,
        buffer_ms: u32,
        reference_rate: Option<u32>,
    ) -> PyResult<Self> {
        let opts = options(device, sample_rate, device_rate, buffer_ms);
        py.detach(|| {
            let mut inner = AudioOutput::open(&opts, reference_rate.is_some())?;
            let reference = reference_rate
                .map(|rate| inner.take_reference(rate))
                .transpose()?;
            Ok::<_, DeviceError>(Self { inner, reference })
        })
        .map_err(PyErr::from)
    }

    /// Queue samples for playback, waiting up to `timeout` seconds for room
    /// (None: as long as it takes). Returns how many were taken.
    #[pyo3(signature = (samples, timeout = None))]
    fn write(
        &mut self,
        py: Python<'_>,
        samples: PyReadonlyArray1<'_, f32>,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        let timeout = timeout_of(timeout)?;
        let samples = samples_of(&samples);
        let inner = &mut self.inner;
        Ok(py.detach(|| inner.write(&samples, timeout))?)
    }

    /// End the utterance (queue the resampler's tail).
    #[pyo3(signature = (timeout = None))]
    fn finish(&mut self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let timeout = timeout_of(timeout)?;
        let inner = &mut self.inner;
        Ok(py.detach(|| inner.finish(timeout))?)
    }

    /// Drop everything queued, now (barge-in).
    fn clear(&mut self) {
        self.inner.clear();
    }

    /// Wait until everything queued has played; returns whether it did.
    fn wait_idle(&mut self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = timeout_of(Some(timeout))?.unwrap_or_default();
        let inner = &mut self.inner;
        Ok(py.detach(|| inner.wait_idle(timeout)))
    }

    /// Move what was played since the last call into `aec`'s far end;
    /// returns how many samples it got.
    fn feed_reference(
        &mut self,
        py: Python<'_>,
        aec: PyRef<'_, PyEchoCanceller>,
    ) -> PyResult<usize> {
        let tap = self.reference.as_mut().ok_or(DeviceError::NoReference)?;
        let mut guard = aec.aec();
        let aec: &mut EchoCanceller = &mut guard;
        Ok(py.detach(|| tap.feed(aec))?)
    }

    /// Real samples played so far at `sample_rate` (silence not counted).
    #[getter]
    fn played_samples(&self) -> u64 {
        self.inner.played_samples()
    }

    /// Milliseconds of real audio played so far.
    #[getter]
    fn played_ms(&self) -> u64 {
        self.inner.played_ms()
    }

    /// Callbacks that ran dry mid-utterance (and played silence).
    #[getter]
    fn underruns(&self) -> u64 {
        self.inner.underruns()
    }

    /// Samples (device rate) waiting to be played.
    #[getter]
    fn queued(&self) -> usize {
        self.inner.queued()
    }

    /// `device`, `sample_rate`, `device_rate`, `channels`, `sample_format`.
    #[getter]
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        info_dict(py, self.inner.info())
    }

    /// Stop the stream; queued audio is dropped.
    fn close(&mut self) {
        self.inner.close();
    }
}
