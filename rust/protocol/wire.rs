//! What every part of the protocol shares: the dialect, the error a refused
//! client event gets, and typed access to JSON fields.

use serde_json::{Value, json};
use thiserror::Error;

/// Which flavour of the protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The GA protocol (`client.realtime.connect`), the default.
    Ga,
    /// The beta protocol (`OpenAI-Beta: realtime=v1`): beta event names and
    /// flat session fields.
    Beta,
}

/// A client event the server refused; answered with an `error` event.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{message}")]
#[non_exhaustive]
pub struct ProtocolError {
    /// `invalid_request_error` or `server_error`.
    pub kind: &'static str,
    /// A stable code (`invalid_json`, `unknown_event`, `missing_required_parameter`, ...).
    pub code: &'static str,
    /// What was wrong and what to send instead.
    pub message: String,
    /// The offending parameter, dotted (`session.audio.input.format.rate`).
    pub param: Option<String>,
}

impl ProtocolError {
    /// An `invalid_request_error`.
    pub fn invalid(code: &'static str, message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            kind: "invalid_request_error",
            code,
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    /// A wrong value for `param`.
    pub fn value(param: &str, message: impl Into<String>) -> Self {
        Self::invalid("invalid_value", message, Some(param))
    }

    /// A required `param` is missing.
    pub fn missing(param: &str) -> Self {
        Self::invalid(
            "missing_required_parameter",
            format!("Missing required parameter: '{param}'."),
            Some(param),
        )
    }

    /// The `error` object of the wire event.
    pub fn to_error_body(&self, event_id: Option<&str>) -> Value {
        json!({
            "type": self.kind,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "event_id": event_id,
        })
    }
}

/// Field access helpers that turn a wrong type into a `ProtocolError`.
pub(crate) mod field {
    use super::ProtocolError;
    use serde_json::{Map, Value};

    pub(crate) fn join(prefix: &str, key: &str) -> String {
        if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        }
    }

    /// `obj[key]`, treating JSON `null` as absent.
    pub(crate) fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
        obj.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn object<'a>(
        v: &'a Value,
        param: &str,
    ) -> Result<&'a Map<String, Value>, ProtocolError> {
        v.as_object()
            .ok_or_else(|| ProtocolError::value(param, format!("'{param}' must be an object.")))
    }

    pub(crate) fn string(
        obj: &Map<String, Value>,
        key: &str,
        prefix: &str,
    ) -> Result<Option<String>, ProtocolError> {
        match get(obj, key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => {
                let p = join(prefix, key);
                Err(ProtocolError::value(&p, format!("'{p}' must be a string.")))
            }
        }
    }

    pub(crate) fn required_string(
        obj: &Map<String, Value>,
        key: &str,
        prefix: &str,
    ) -> Result<String, ProtocolError> {
        string(obj, key, prefix)?.ok_or_else(|| ProtocolError::missing(&join(prefix, key)))
    }

    pub(crate) fn boolean(
        obj: &Map<String, Value>,
        key: &str,
        prefix: &str,
    ) -> Result<Option<bool>, ProtocolError> {
        match get(obj, key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => {
                let p = join(prefix, key);
                Err(ProtocolError::value(
                    &p,
                    format!("'{p}' must be a boolean."),
                ))
            }
        }
    }

    pub(crate) fn number(
        obj: &Map<String, Value>,
        key: &str,
        prefix: &str,
        min: f64,
        max: f64,
    ) -> Result<Option<f64>, ProtocolError> {
        match get(obj, key) {
            None => Ok(None),
            Some(v) => {
                let p = join(prefix, key);
                match v.as_f64() {
                    Some(x) if x.is_finite() && x >= min && x <= max => Ok(Some(x)),
                    _ => Err(ProtocolError::value(
                        &p,
                        format!("'{p}' must be a number between {min} and {max}."),
                    )),
                }
            }
        }
    }

    pub(crate) fn integer(
        obj: &Map<String, Value>,
        key: &str,
        prefix: &str,
        max: u64,
    ) -> Result<Option<u64>, ProtocolError> {
        match get(obj, key) {
            None => Ok(None),
            Some(v) => {
                let p = join(prefix, key);
                match v.as_u64() {
                    Some(x) if x <= max => Ok(Some(x)),
                    _ => Err(ProtocolError::value(
                        &p,
                        format!("'{p}' must be an integer between 0 and {max}."),
                    )),
                }
            }
        }
    }
}
