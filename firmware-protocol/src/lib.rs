//! The DropBot-family DMF control board's host link, as bytes: framing, CRC, remote calls,
//! command tables, protobuf state and config, asynchronous events.
//!
//! This crate does no I/O and knows nothing of tokio, MQTT or the plugin, so a simulator, a
//! firmware author or a host in another program can all use it. The protocol itself is
//! specified in this crate's `README.md`.
//!
//! ```
//! use firmware_protocol::{Decoder, Packet};
//!
//! let bytes = Packet::Data { id: 7, payload: b"hi".to_vec() }.to_bytes().unwrap();
//! let mut decoder = Decoder::new();
//! let mut packets = Vec::new();
//! decoder.feed(&bytes, |p| packets.push(p));
//! assert_eq!(packets, vec![Packet::Data { id: 7, payload: b"hi".to_vec() }]);
//! ```

// Nothing from outside may panic this library: no unwrap, no expect, no indexing that can go
// out of bounds (tests may; see clippy.toml). Lints of the library only, not of the test and
// bench targets, whose fixtures panic on purpose.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod channels;
pub mod commands;
pub mod decoder;
pub mod events;
pub mod packet;
pub mod rpc;
pub mod state;
pub mod table;
pub mod table_set;

pub use channels::ChannelError;
pub use commands::{Command, CommandName, Request, RequestError};
pub use decoder::{Decoder, DecoderStats};
pub use events::{Event, EventError};
pub use packet::{
    crc16, EncodeError, Packet, PacketType, MAX_REPLY_PAYLOAD, MAX_REQUEST_PAYLOAD, START,
};
pub use rpc::{CallBuilder, CallReader, RpcError, WireValue};
pub use state::StateError;
pub use state::{Config, State};
pub use table::{parse_identity, CommandTable, TableError, SIMULATOR_VERSION};
pub use table_set::TableSet;
