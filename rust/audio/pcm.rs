//! PCM16 little-endian bytes <-> f32 / i16 sample conversion.
//!
//! Every conversion validates its input: an odd byte count is an error,
//! never a silently dropped half-sample.

use thiserror::Error;

/// Errors from converting between sample formats.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PcmError {
    /// PCM16 data must hold whole 2-byte samples. The caller should check
    /// how the bytes were framed (a chunk split mid-sample, or 8-bit data).
    #[error("PCM16 data has an odd number of bytes ({len}); each sample is 2 bytes")]
    OddByteCount {
        /// The byte count that was given.
        len: usize,
    },
    /// The output buffer is shorter than the input needs. The caller should
    /// size it with the matching `*_len` helper.
    #[error("output buffer holds {got} samples but {needed} are needed")]
    OutputTooSmall {
        /// Samples the output must hold.
        needed: usize,
        /// Samples it holds.
        got: usize,
    },
}

/// Scale between i16 and the f32 range [-1, 1).
const I16_SCALE: f32 = 32768.0;

/// Number of samples in `bytes` bytes of PCM16, or an error if odd.
pub fn pcm16_sample_count(bytes: usize) -> Result<usize, PcmError> {
    if bytes.is_multiple_of(2) {
        Ok(bytes / 2)
    } else {
        Err(PcmError::OddByteCount { len: bytes })
    }
}

fn check_out(needed: usize, got: usize) -> Result<(), PcmError> {
    if got < needed {
        Err(PcmError::OutputTooSmall { needed, got })
    } else {
        Ok(())
    }
}

/// Decode PCM16 LE bytes into f32 samples in [-1, 1); returns samples written.
pub fn pcm16_to_f32_into(bytes: &[u8], out: &mut [f32]) -> Result<usize, PcmError> {
    let n = pcm16_sample_count(bytes.len())?;
    check_out(n, out.len())?;
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = f32::from(i16::from_le_bytes([b[0], b[1]])) / I16_SCALE;
    }
    Ok(n)
}

/// Decode PCM16 LE bytes into a new f32 vector.
pub fn pcm16_to_f32(bytes: &[u8]) -> Result<Vec<f32>, PcmError> {
    let mut out = vec![0.0; pcm16_sample_count(bytes.len())?];
    pcm16_to_f32_into(bytes, &mut out)?;
    Ok(out)
}

/// Decode PCM16 LE bytes into i16 samples; returns samples written.
pub fn pcm16_to_i16_into(bytes: &[u8], out: &mut [i16]) -> Result<usize, PcmError> {
    let n = pcm16_sample_count(bytes.len())?;
    check_out(n, out.len())?;
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = i16::from_le_bytes([b[0], b[1]]);
    }
    Ok(n)
}

/// Convert one f32 sample to i16, rounding to nearest and clipping.
#[inline]
pub fn f32_to_i16_sample(x: f32) -> i16 {
    // NaN maps to 0 through the saturating `as` cast.
    (x * I16_SCALE).round().clamp(-32768.0, 32767.0) as i16
}

/// Encode f32 samples as PCM16 LE bytes into `out` (2 bytes a sample).
pub fn f32_to_pcm16_into(samples: &[f32], out: &mut [u8]) -> Result<usize, PcmError> {
    let needed = samples.len() * 2;
    if out.len() < needed {
        return Err(PcmError::OutputTooSmall {
            needed: samples.len(),
            got: out.len() / 2,
        });
    }
    for (o, &s) in out.chunks_exact_mut(2).zip(samples) {
        o.copy_from_slice(&f32_to_i16_sample(s).to_le_bytes());
    }
    Ok(needed)
}

/// Encode f32 samples as a new PCM16 LE byte vector.
pub fn f32_to_pcm16(samples: &[f32]) -> Vec<u8> {
    let mut out = vec![0; samples.len() * 2];
    for (o, &s) in out.chunks_exact_mut(2).zip(samples) {
        o.copy_from_slice(&f32_to_i16_sample(s).to_le_bytes());
    }
    out
}

/// Encode i16 samples as PCM16 LE bytes.
pub fn i16_to_pcm16(samples: &[i16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 2);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Convert i16 samples to f32 in [-1, 1).
pub fn i16_to_f32_into(samples: &[i16], out: &mut [f32]) -> Result<usize, PcmError> {
    check_out(samples.len(), out.len())?;
    for (o, &s) in out.iter_mut().zip(samples) {
        *o = f32::from(s) / I16_SCALE;
    }
    Ok(samples.len())
}

/// Convert f32 samples to i16 (round to nearest, clip).
pub fn f32_to_i16_into(samples: &[f32], out: &mut [i16]) -> Result<usize, PcmError> {
    check_out(samples.len(), out.len())?;
    for (o, &s) in out.iter_mut().zip(samples) {
        *o = f32_to_i16_sample(s);
    }
    Ok(samples.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_byte_count_is_an_error() {
        assert_eq!(
            pcm16_to_f32(&[0, 1, 2]),
            Err(PcmError::OddByteCount { len: 3 })
        );
        let mut out = [0i16; 4];
        assert!(pcm16_to_i16_into(&[1], &mut out).is_err());
    }

    #[test]
    fn every_i16_round_trips_through_f32_and_bytes() {
        let all: Vec<i16> = (i16::MIN..=i16::MAX).collect();
        let bytes = i16_to_pcm16(&all);
        let f = pcm16_to_f32(&bytes).unwrap();
        assert!((f[0] + 1.0).abs() < f32::EPSILON);
        let back = f32_to_pcm16(&f);
        assert_eq!(back, bytes);
        let mut i = vec![0i16; all.len()];
        pcm16_to_i16_into(&bytes, &mut i).unwrap();
        assert_eq!(i, all);
    }

    #[test]
    fn f32_clips_and_rounds() {
        assert_eq!(f32_to_i16_sample(2.0), 32767);
        assert_eq!(f32_to_i16_sample(-2.0), -32768);
        assert_eq!(f32_to_i16_sample(f32::NAN), 0);
        assert_eq!(f32_to_i16_sample(0.5 / 32768.0 + 1e-7), 1);
        assert_eq!(f32_to_pcm16(&[1.0]), 32767i16.to_le_bytes().to_vec());
    }

    #[test]
    fn short_output_is_an_error() {
        let mut out = [0f32; 1];
        assert_eq!(
            pcm16_to_f32_into(&[0, 0, 0, 0], &mut out),
            Err(PcmError::OutputTooSmall { needed: 2, got: 1 })
        );
    }
}
