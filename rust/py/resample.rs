//! Bindings for the streaming resampler.

use numpy::{PyArray1, PyReadonlyArray1, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::audio::resample::{ResampleError, Resampler};

/// Inputs at least this long (about 0.7 s at 48 kHz) are copied and
/// resampled with the GIL released; shorter ones cost less than the switch.
const DETACH_MIN_SAMPLES: usize = 1 << 15;

/// Copy the input out of numpy if it must be (non-contiguous) or should be
/// (long enough to release the GIL: Python code may write to the array
/// while we do not hold it). Returns whether it copied; if not, the caller
/// borrows the array in place, with the GIL held.
fn copy_input(samples: &PyReadonlyArray1<'_, f32>, into: &mut Vec<f32>) -> bool {
    let long = samples.len() >= DETACH_MIN_SAMPLES;
    match samples.as_slice() {
        Ok(s) if long => {
            into.clear();
            into.extend_from_slice(s);
            true
        }
        Ok(_) => false,
        Err(_) => {
            into.clear();
            into.extend(samples.as_array().iter().copied());
            true
        }
    }
}

/// Streaming resampler for one mono float32 stream.
///
/// Feed it chunks with `process`, end the stream with `flush`. The output is
/// time-aligned with the input (no shift to compensate); `delay` is how many
/// output samples a stream holds back until more input or the flush.
#[pyclass(name = "Resampler", module = "speech_to_speech._core")]
pub struct PyResampler {
    inner: Resampler,
    /// Reused output buffer, so a call allocates only the returned array.
    out: Vec<f32>,
    /// Reused copy of inputs that are processed without the GIL.
    input: Vec<f32>,
}

#[pymethods]
impl PyResampler {
    #[new]
    #[pyo3(signature = (*, input_rate, output_rate))]
    fn new(input_rate: u32, output_rate: u32) -> PyResult<Self> {
        Ok(Self {
            inner: Resampler::new(input_rate, output_rate)?,
            out: Vec::new(),
            input: Vec::new(),
        })
    }

    /// Resample the next chunk (any length); returns the output it completes.
    fn process<'py>(
        &mut self,
        py: Python<'py>,
        samples: PyReadonlyArray1<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let needed = self.inner.output_len(samples.len());
        if self.out.len() < needed {
            self.out.resize(needed, 0.0);
        }
        let written = if copy_input(&samples, &mut self.input) {
            let (inner, input, out) = (&mut self.inner, &self.input, &mut self.out);
            if input.len() >= DETACH_MIN_SAMPLES {
                py.detach(|| inner.process_into(input, out))?
            } else {
                inner.process_into(input, out)?
            }
        } else {
            self.inner
                .process_into(samples.as_slice()?, &mut self.out)?
        };
        Ok(PyArray1::from_slice(py, &self.out[..written]))
    }

    /// End the stream: return the held-back tail and start a new stream.
    fn flush<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let needed = self.inner.flush_len();
        if self.out.len() < needed {
            self.out.resize(needed, 0.0);
        }
        let written = self.inner.flush_into(&mut self.out)?;
        Ok(PyArray1::from_slice(py, &self.out[..written]))
    }

    /// Forget the stream without emitting its tail.
    fn reset(&mut self) {
        self.inner.reset();
    }

    /// Input sample rate in Hz.
    #[getter]
    fn input_rate(&self) -> u32 {
        self.inner.input_rate()
    }

    /// Output sample rate in Hz.
    #[getter]
    fn output_rate(&self) -> u32 {
        self.inner.output_rate()
    }

    /// Streaming latency in output samples (a float; 0.0 for equal rates).
    #[getter]
    fn delay(&self) -> f64 {
        self.inner.delay()
    }

    /// Streaming latency in seconds.
    #[getter]
    fn delay_seconds(&self) -> f64 {
        self.inner.delay_seconds()
    }

    fn __repr__(&self) -> String {
        format!(
            "Resampler(input_rate={}, output_rate={})",
            self.inner.input_rate(),
            self.inner.output_rate()
        )
    }
}

/// Resample a whole float32 signal (process plus flush): the result has
/// exactly `ceil(len(samples) * output_rate / input_rate)` samples.
#[pyfunction]
#[pyo3(signature = (samples, *, input_rate, output_rate))]
pub fn resample<'py>(
    py: Python<'py>,
    samples: PyReadonlyArray1<'py, f32>,
    input_rate: u32,
    output_rate: u32,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    fn whole(r: &mut Resampler, input: &[f32], out: &mut [f32]) -> Result<usize, ResampleError> {
        let n = r.process_into(input, out)?;
        let m = r.flush_into(out.get_mut(n..).unwrap_or_default())?;
        Ok(n + m)
    }
    let mut r = Resampler::new(input_rate, output_rate)?;
    let mut out = vec![0.0; r.output_len_max(samples.len())];
    let mut copy = Vec::new();
    let written = if copy_input(&samples, &mut copy) {
        if copy.len() >= DETACH_MIN_SAMPLES {
            py.detach(|| whole(&mut r, &copy, &mut out))?
        } else {
            whole(&mut r, &copy, &mut out)?
        }
    } else {
        whole(&mut r, samples.as_slice()?, &mut out)?
    };
    out.truncate(written);
    Ok(PyArray1::from_vec(py, out))
}
