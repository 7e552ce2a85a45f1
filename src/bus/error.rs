//! The bus layer's error type.

use thiserror::Error;

/// Everything that can go wrong in the bus layer: topics, payloads and the MQTT connection.
#[derive(Debug, Error)]
pub enum BusError {
    /// A topic string or topic part does not follow MicroDrop's grammar.
    #[error("invalid topic `{topic}`: {reason}")]
    Topic {
        /// The offending topic or segment.
        topic: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A route pattern (with `{name}` placeholders) is malformed.
    #[error("invalid route pattern `{pattern}`: {reason}")]
    Pattern {
        /// The offending pattern.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A payload is not UTF-8 text.
    #[error("payload is not UTF-8 text: {0}")]
    NotUtf8(#[from] std::str::Utf8Error),
    /// A payload is not valid JSON (or a value could not be encoded).
    #[error("payload is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// An empty payload: on a retained topic this means the value was cleared.
    #[error("payload is empty (a cleared retained value)")]
    EmptyPayload,
    /// A payload (or the packet carrying it) is larger than the configured limit.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the payload (or packet) in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// An incoming message over its topic's payload limit: dropped as it arrived (the
    /// connection stays up).
    #[error(
        "the message on `{topic}` has {size} bytes, over this topic's limit of {limit} bytes \
         (it was dropped; the limits are the bus.payload_limits settings)"
    )]
    Oversized {
        /// The topic it came on.
        topic: String,
        /// Its payload's size in bytes.
        size: usize,
        /// The topic's limit in bytes.
        limit: usize,
    },
    /// The connection options are unusable.
    #[error("invalid bus options: {0}")]
    Options(String),
    /// The request queue towards the broker was full; the message was dropped (and counted).
    #[error("MQTT request queue full: message to `{0}` dropped")]
    QueueFull(String),
    /// The client has shut down; nothing can be sent any more.
    #[error("MQTT client is closed")]
    Closed,
    /// An operation did not finish in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, &'static str),
}
