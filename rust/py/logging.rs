//! The core's log (sessions, per-turn timings, the server) on stderr.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Print the core's log to stderr at `level` (default: the `S2S_LOG`
/// variable, else `info`). Returns false when a logger was already set.
#[pyfunction]
#[pyo3(signature = (level=None))]
pub fn init_logging(level: Option<String>) -> PyResult<bool> {
    let level = level
        .or_else(|| std::env::var("S2S_LOG").ok())
        .unwrap_or_else(|| "info".to_owned());
    let name = match level.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_owned(),
        "critical" => "error".to_owned(),
        other => other.to_owned(),
    };
    let max: tracing::Level = name.parse().map_err(|_| {
        PyValueError::new_err(format!(
            "unknown log level '{level}': use error, warn, info, debug or trace"
        ))
    })?;
    Ok(tracing_subscriber::fmt()
        .with_max_level(max)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init()
        .is_ok())
}
