//! Sample formats, G.711 companding and streaming resampling.

pub mod g711;
pub mod pcm;
pub mod resample;
