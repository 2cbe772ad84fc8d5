//! Sample formats, G.711 companding, streaming resampling, the FLAC and Ogg Opus
//! encoders of `/v1/audio/speech`, and the audio front end: devices, echo
//! cancellation and noise suppression.

pub mod aec;
pub mod device;
mod fifo;
pub mod flac;
pub mod g711;
pub mod ns;
pub mod ogg_opus;
pub mod pcm;
pub mod resample;
