//! Streaming sample-rate conversion (placeholder until the resampler lands).
