//! `dropbot-plugin`: a MicroDrop 3 process plugin that owns a DropBot digital-microfluidics
//! control board and drives it from MicroDrop's MQTT bus.
//!
//! Layers, data flowing one way (see `docs/architecture.md`):
//!
//! ```text
//! firmware-protocol (bytes) -> board (link, typed API) -> actuation -> plugin (glue) -> bus (MQTT)
//! ```
//!
//! `sim` is a DropBot on the wire behind a pseudo-terminal; `device` is the chip's geometry;
//! `broker` embeds an MQTT broker for the demo. The fixtures for tests and benches are the
//! workspace crate `dropbot-testkit` (a dev-dependency: nothing of it ships in this library).

// Nothing from outside may panic this library: no unwrap, no expect, no indexing that can go
// out of bounds (tests may; see clippy.toml). Lints of the library only, not of the test and
// bench targets, whose fixtures panic on purpose.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod actuation;
pub mod board;
pub mod broker;
pub mod bus;
pub mod calibration;
pub mod config;
pub mod device;
pub mod plot;
pub mod plugin;
mod ratelimit;
pub mod runlog;
pub mod sim;
mod sync;
pub mod view;
