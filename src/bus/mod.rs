//! The MQTT bus layer: MicroDrop 3's conventions on top of rumqttc, and nothing of boards.
//!
//! - [`topics`]: the topic grammar (`microdrop/put/<receiver>/<property>`, ...).
//! - [`router`]: routes with `{name}` placeholders -> MQTT filters, topic -> key + captures.
//! - [`envelope`]: the `__head__` header, put/trigger unwrapping, notify replies.
//! - [`client`]: [`BusClient`], the one owner of the MQTT connection (poll task, backoff,
//!   resubscription and retained republish on every ConnAck, last will).
//! - `sync`: which messages are stored state, whatever the broker does with the retain flag.
//! - `ack`: no packet from the broker left unacknowledged (no delayed-ACK stalls).
//! - [`handle`]: [`BusHandle`], the cloneable, never-blocking publishing side.
//! - [`options`]: [`BusOptions`], how to reach the broker (TCP, Unix socket, TLS) and who we are.
//! - [`limits`]: payload limits per topic and the byte budget of waiting messages.
//! - `guard`: the wills of more retained topics, each on an idle connection of its own.
//! - `backoff`: the delays between connection attempts.

mod ack;
mod backoff;
pub mod client;
pub mod envelope;
pub mod error;
mod guard;
pub mod handle;
pub mod limits;
pub mod options;
pub mod router;
mod shared;
mod sync;
#[cfg(feature = "tls")]
mod tls;
pub mod topics;

pub use client::{BusClient, BusMessage, ConnectionState, Farewell};
pub use envelope::{Envelope, Header, ReplyStatus};
pub use error::BusError;
pub use handle::{BusHandle, BusStats};
pub use limits::{PayloadLimits, MQTT_MAX_PACKET};
pub use options::{BusOptions, BusTransport, Will};
pub use router::{Captures, Router};
pub use shared::Rejected;
pub use topics::{filter_matches, Topic};
