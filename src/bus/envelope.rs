//! MicroDrop's payload conventions: the `__head__` header, put/trigger wrapping, notify replies.
//!
//! Object payloads carry `"__head__": {"plugin_name", "plugin_version"}`; arrays, strings,
//! numbers and booleans go bare. A reader strips the top-level `__head__` (nested ones are
//! data) and takes `__head__.plugin_name` as the address to reply to.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Map, Value};

use super::error::BusError;
use super::topics::validate_name;

/// Key of the header in object payloads.
pub const HEAD: &str = "__head__";

/// Who sent a message: added to every object payload as `__head__`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The sending plugin's name (also the address replies go to).
    pub plugin_name: String,
    /// The sending plugin's version, `x.y.z`.
    pub plugin_version: String,
}

impl Header {
    /// A header for `plugin_name` at `plugin_version`.
    pub fn new(plugin_name: impl Into<String>, plugin_version: impl Into<String>) -> Self {
        Header {
            plugin_name: plugin_name.into(),
            plugin_version: plugin_version.into(),
        }
    }

    /// The header as the JSON object that goes under `__head__`.
    pub fn to_value(&self) -> Value {
        json!({"plugin_name": self.plugin_name, "plugin_version": self.plugin_version})
    }
}

/// An object with our header in place of any `__head__` it had, serialized without copying.
struct WithHead<'a> {
    map: &'a Map<String, Value>,
    head: &'a Header,
}

impl Serialize for WithHead<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_map(None)?;
        for (k, v) in self.map.iter().filter(|(k, _)| k.as_str() != HEAD) {
            out.serialize_entry(k, v)?;
        }
        out.serialize_entry(HEAD, &self.head.to_value())?;
        out.end()
    }
}

/// JSON text of `value` as MicroDrop sends it: objects get `head`, other values go bare.
/// Fails with [`BusError::TooLarge`] when the text is longer than `limit` bytes.
pub fn encode(value: &Value, head: &Header, limit: usize) -> Result<Vec<u8>, BusError> {
    let bytes = match value {
        Value::Object(map) => serde_json::to_vec(&WithHead { map, head })?,
        other => serde_json::to_vec(other)?,
    };
    if bytes.len() > limit {
        return Err(BusError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    Ok(bytes)
}

/// A message read from the bus, with its top-level `__head__` removed.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The payload without `__head__`.
    pub value: Value,
    /// The header as received, if the payload was an object with one.
    pub head: Option<Value>,
}

impl Envelope {
    /// Parses a payload of at most `limit` bytes. Errors: [`BusError::TooLarge`],
    /// [`BusError::EmptyPayload`] (a cleared retained value), [`BusError::NotUtf8`],
    /// [`BusError::Json`].
    pub fn decode(payload: &[u8], limit: usize) -> Result<Self, BusError> {
        if payload.len() > limit {
            return Err(BusError::TooLarge {
                size: payload.len(),
                limit,
            });
        }
        if payload.is_empty() {
            return Err(BusError::EmptyPayload);
        }
        let text = std::str::from_utf8(payload)?;
        let mut value: Value = serde_json::from_str(text)?;
        let head = match &mut value {
            Value::Object(map) => map.remove(HEAD),
            _ => None,
        };
        Ok(Envelope { value, head })
    }

    /// Where to send the notify reply: `__head__.plugin_name`, if present and usable as a
    /// topic level. `None` means the sender wants no reply.
    pub fn reply_to(&self) -> Option<&str> {
        let name = self.head.as_ref()?.get("plugin_name")?.as_str()?;
        validate_name(name).ok().map(|()| name)
    }

    /// The value of a put to `property`: `{"<property>": v}` gives `v`; any other payload
    /// (an object without that key, or a bare value) is the value itself.
    pub fn put_value(&self, property: &str) -> &Value {
        match &self.value {
            Value::Object(map) => map.get(property).unwrap_or(&self.value),
            other => other,
        }
    }

    /// The value of a trigger: `{"data": v}` (with no other key) gives `v`; anything else is
    /// the value itself.
    pub fn trigger_value(&self) -> &Value {
        match &self.value {
            Value::Object(map) if map.len() == 1 => map.get("data").unwrap_or(&self.value),
            other => other,
        }
    }
}

/// Outcome of a put or trigger, as told to the client that asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    /// The request was carried out; `response` is the result.
    Success,
    /// The request was refused or failed; `response` says why.
    Failed,
}

impl ReplyStatus {
    /// The wire word: `"success"` or `"failed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyStatus::Success => "success",
            ReplyStatus::Failed => "failed",
        }
    }
}

/// The body of a notify reply, `{"status", "response"}` (the header is added by [`encode`]).
pub fn reply_body(status: ReplyStatus, response: Value) -> Value {
    json!({"status": status.as_str(), "response": response})
}

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;
