//! Sample formats, G.711 companding, streaming resampling, and the audio front end:
//! devices, echo cancellation and noise suppression.

pub mod aec;
pub mod device;
mod fifo;
pub mod g711;
pub mod ns;
pub mod pcm;
pub mod resample;
