//! Bindings for sample-format conversion and G.711.

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::audio::{g711, pcm};

/// Decode PCM16 little-endian bytes to float32 samples in [-1, 1).
#[pyfunction]
pub fn pcm16_to_float32<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyArray1<f32>>> {
    Ok(PyArray1::from_vec(py, pcm::pcm16_to_f32(data)?))
}

/// Decode PCM16 little-endian bytes to int16 samples.
#[pyfunction]
pub fn pcm16_to_int16<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyArray1<i16>>> {
    let mut out = vec![0i16; pcm::pcm16_sample_count(data.len())?];
    pcm::pcm16_to_i16_into(data, &mut out)?;
    Ok(PyArray1::from_vec(py, out))
}

/// Encode float32 samples as PCM16 little-endian bytes (rounded, clipped).
#[pyfunction]
#[expect(
    clippy::needless_pass_by_value,
    reason = "pyo3 hands extracted arguments over by value"
)]
pub fn float32_to_pcm16<'py>(
    py: Python<'py>,
    samples: PyReadonlyArray1<'py, f32>,
) -> PyResult<Bound<'py, PyBytes>> {
    let s = samples.as_slice()?;
    PyBytes::new_with(py, s.len() * 2, |buf| {
        pcm::f32_to_pcm16_into(s, buf)?;
        Ok(())
    })
}

/// Encode int16 samples as PCM16 little-endian bytes.
#[pyfunction]
#[expect(
    clippy::needless_pass_by_value,
    reason = "pyo3 hands extracted arguments over by value"
)]
pub fn int16_to_pcm16<'py>(
    py: Python<'py>,
    samples: PyReadonlyArray1<'py, i16>,
) -> PyResult<Bound<'py, PyBytes>> {
    let s = samples.as_slice()?;
    PyBytes::new_with(py, s.len() * 2, |buf| {
        for (o, v) in buf.chunks_exact_mut(2).zip(s) {
            o.copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    })
}

/// Encode int16 samples as G.711 mu-law bytes.
#[pyfunction]
#[expect(
    clippy::needless_pass_by_value,
    reason = "pyo3 hands extracted arguments over by value"
)]
pub fn mulaw_encode<'py>(
    py: Python<'py>,
    samples: PyReadonlyArray1<'py, i16>,
) -> PyResult<Bound<'py, PyBytes>> {
    let s = samples.as_slice()?;
    PyBytes::new_with(py, s.len(), |buf| {
        g711::mulaw_encode_into(s, buf);
        Ok(())
    })
}

/// Decode G.711 mu-law bytes to int16 samples.
#[pyfunction]
pub fn mulaw_decode<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyArray1<i16>> {
    let mut out = vec![0i16; data.len()];
    g711::mulaw_decode_into(data, &mut out);
    PyArray1::from_vec(py, out)
}

/// Encode int16 samples as G.711 A-law bytes.
#[pyfunction]
#[expect(
    clippy::needless_pass_by_value,
    reason = "pyo3 hands extracted arguments over by value"
)]
pub fn alaw_encode<'py>(
    py: Python<'py>,
    samples: PyReadonlyArray1<'py, i16>,
) -> PyResult<Bound<'py, PyBytes>> {
    let s = samples.as_slice()?;
    PyBytes::new_with(py, s.len(), |buf| {
        g711::alaw_encode_into(s, buf);
        Ok(())
    })
}

/// Decode G.711 A-law bytes to int16 samples.
#[pyfunction]
pub fn alaw_decode<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyArray1<i16>> {
    let mut out = vec![0i16; data.len()];
    g711::alaw_decode_into(data, &mut out);
    PyArray1::from_vec(py, out)
}
