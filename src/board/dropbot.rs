//! A connected DropBot: the handshake that identifies it and picks its command table, what it
//! told about itself ([`BoardInfo`]), and the call machinery the typed methods (in `api.rs`)
//! are built on.
//!
//! Retries: a read that timed out is sent once more (reading twice does no harm); a call that
//! changes the board is never repeated blindly, since the first may have been applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use firmware_protocol::commands::{
    EchoArray, HardwareVersion, Microseconds, SerializeConfig, SerializeState, SoftwareVersion,
    Uuid,
};
use firmware_protocol::{
    parse_identity, Command, CommandTable, Config, State, TableSet, WireValue,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;

use super::error::{BoardError, LinkError};
use super::event::BoardEvent;
use super::link::{Link, LinkOptions, LinkStats, Reply};
use super::port::open_port;
use super::transport::CloseReason;

mod connect;

pub use connect::{BuildInfo, NO_POWER_BELOW_V};

/// What the board told about itself at connection.
#[derive(Debug, Clone, PartialEq)]
pub struct BoardInfo {
    /// The handshake answer, e.g. `dropbot::1.0.0-sim`.
    pub identity: String,
    /// The firmware version from the handshake (chooses the command table).
    pub firmware_version: String,
    /// `software_version()`.
    pub software_version: String,
    /// `hardware_version()`.
    pub hardware_version: String,
    /// The board's UUID, hyphenated lowercase hex.
    pub uuid: String,
    /// Number of electrode channels (from the switching-board scan made at connection).
    pub channel_count: u16,
    /// The firmware build's strings (`package_name`, ...).
    pub build: BuildInfo,
    /// `high_voltage()` at connection: with HV off, about half the supply voltage.
    pub supply_voltage: Option<f32>,
    /// The board has no 12 V supply (`supply_voltage` under [`NO_POWER_BELOW_V`]): HV will not
    /// come up. Not an error: the board still answers.
    pub no_power: bool,
    /// Whether a chip was in at connection (the interlock pin).
    pub chip_inserted: Option<bool>,
    /// The board's millisecond counter when its wall clock was set at connection.
    pub clock_set_at_ms: Option<u32>,
    /// Optional reads at connection that failed, and why.
    pub connect_warnings: Vec<String>,
    /// The configuration (EEPROM): voltage and frequency limits among others.
    pub config: Config,
    /// The state read at connection.
    pub state_at_connect: State,
    /// The port it was opened on, if opened by path.
    pub port: Option<String>,
}

/// Whether a call may be repeated after a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Reads: retried once after a timeout.
    Read,
    /// Changes the board: never retried.
    Write,
}

/// The link plus the command table: enough to make calls.
#[derive(Clone)]
struct Caller {
    link: Link,
    table: CommandTable,
}

impl Caller {
    async fn call<C: Command>(
        &self,
        command: &C,
        kind: Kind,
        timeout: Duration,
    ) -> Result<C::Reply, BoardError> {
        Ok(self.call_timed(command, kind, timeout).await?.0)
    }

    async fn call_timed<C: Command>(
        &self,
        command: &C,
        kind: Kind,
        timeout: Duration,
    ) -> Result<(C::Reply, CallTiming), BoardError> {
        let payload = command.encode(&self.table)?;
        let name = C::NAME.as_str();
        let reply = match self.link.request_timed(name, &payload, timeout).await {
            Err(LinkError::Timeout { .. }) if kind == Kind::Read && !self.link.is_closed() => {
                tracing::debug!(command = name, "read timed out; retrying once");
                self.link.request_timed(name, &payload, timeout).await?
            }
            other => other?,
        };
        decode::<C>(&reply)
    }

    /// [`Caller::call_timed`] from a plain thread ([`Link::request_blocking_at`]), written no
    /// earlier than `at`.
    fn call_blocking<C: Command>(
        &self,
        command: &C,
        kind: Kind,
        timeout: Duration,
        at: Option<Instant>,
    ) -> Result<(C::Reply, CallTiming), BoardError> {
        let payload = command.encode(&self.table)?;
        let name = C::NAME.as_str();
        let reply = match self.link.request_blocking_at(name, &payload, timeout, at) {
            Err(LinkError::Timeout { .. }) if kind == Kind::Read && !self.link.is_closed() => {
                tracing::debug!(command = name, "read timed out; retrying once");
                self.link.request_blocking(name, &payload, timeout)?
            }
            other => other?,
        };
        decode::<C>(&reply)
    }

    /// One `microseconds()` round trip into the clock; returns the unwrapped board time.
    async fn sync_time(&self, timeout: Duration) -> Result<u64, BoardError> {
        let payload = Microseconds {}.encode(&self.table)?;
        let name = Microseconds::NAME.as_str();
        let reply = self.link.request_timed(name, &payload, timeout).await?;
        let raw = u32::decode_reply(&reply.payload).map_err(|source| BoardError::InvalidReply {
            command: name,
            source,
        })?;
        Ok(self
            .link
            .with_clock(|c| c.add_sample(raw, reply.sent, reply.received)))
    }
}

/// A reply as command `C`'s value, with its times.
fn decode<C: Command>(reply: &Reply) -> Result<(C::Reply, CallTiming), BoardError> {
    let timing = CallTiming {
        sent: reply.sent,
        written: reply.written,
        received: reply.received,
    };
    let value = C::decode_reply(&reply.payload).map_err(|source| BoardError::InvalidReply {
        command: C::NAME.as_str(),
        source,
    })?;
    Ok((value, timing))
}

/// When a call went out and when its reply came (host time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTiming {
    /// The request was about to be written.
    pub sent: Instant,
    /// Its last byte had been handed to the port.
    pub written: Instant,
    /// The reply was decoded.
    pub received: Instant,
}

/// A connected DropBot; cheap to clone (all clones share one link).
#[derive(Clone)]
pub struct DropBot {
    caller: Caller,
    info: Arc<BoardInfo>,
}

impl std::fmt::Debug for DropBot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DropBot")
            .field("identity", &self.info.identity)
            .field("uuid", &self.info.uuid)
            .field("port", &self.info.port)
            .finish()
    }
}

/// Time-sync round trips made at connection (the shortest anchors the clock).
const CONNECT_SYNC_SAMPLES: usize = 3;

impl DropBot {
    /// Handshake over `stream` (any byte stream: a serial port, a pty): identify the board,
    /// choose the command table for its firmware version, read its versions, uuid, channel
    /// count, configuration and state, and synchronise time.
    pub async fn connect<S>(
        stream: S,
        tables: &TableSet,
        options: LinkOptions,
    ) -> Result<DropBot, BoardError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        Self::handshake(Link::spawn(stream, options), tables, None).await
    }

    /// Open the serial port at `path` ([`open_port`]: exclusive, raw, DTR asserted; read by a
    /// thread of its own) and [`connect`](Self::connect).
    pub async fn open(
        path: &str,
        tables: &TableSet,
        options: LinkOptions,
    ) -> Result<DropBot, BoardError> {
        // Opening a tty can block (a USB device that stopped answering): not on a worker.
        let owned = path.to_owned();
        let port = tokio::task::spawn_blocking(move || open_port(&owned))
            .await
            .map_err(|e| LinkError::Open {
                path: path.to_owned(),
                reason: e.to_string(),
            })??;
        let link = Link::spawn_port(port, options)?;
        Self::handshake(link, tables, Some(path.to_owned())).await
    }

    async fn handshake(
        link: Link,
        tables: &TableSet,
        port: Option<String>,
    ) -> Result<DropBot, BoardError> {
        let result = Self::handshake_inner(link.clone(), tables, port).await;
        if result.is_err() {
            // Release the port now rather than when the last handle drops.
            link.shutdown().await;
        }
        result
    }

    async fn handshake_inner(
        link: Link,
        tables: &TableSet,
        port: Option<String>,
    ) -> Result<DropBot, BoardError> {
        let options = link.options().clone();
        // Bytes left on the line at open can swallow the first request: ask twice.
        let identity = match link.identify(options.handshake_timeout).await {
            Err(LinkError::Timeout { .. }) if !link.is_closed() => {
                link.identify(options.handshake_timeout).await?
            }
            other => other?,
        };
        let identity = String::from_utf8_lossy(&identity)
            .trim_end_matches('\0')
            .trim()
            .to_owned();
        let version = match parse_identity(&identity) {
            Ok(("dropbot", version)) => version.to_owned(),
            _ => return Err(BoardError::WrongFirmware { identity }),
        };
        let table = tables.for_version(&version)?.clone();
        set_resync_probe(&link, &table);
        let caller = Caller { link, table };
        let t = options.request_timeout;
        let software_version = caller.call(&SoftwareVersion {}, Kind::Read, t).await?;
        let hardware_version = caller.call(&HardwareVersion {}, Kind::Read, t).await?;
        let uuid = format_uuid(&caller.call(&Uuid {}, Kind::Read, t).await?);
        let config = caller.call(&SerializeConfig {}, Kind::Read, t).await?;
        let mut config = Config::from_bytes(&config).map_err(|e| BoardError::BadMessage {
            command: SerializeConfig::NAME.as_str(),
            detail: e.to_string(),
        })?;
        // Left out when never stored: the firmware then uses its build's default.
        config
            .c16
            .get_or_insert_with(|| Config::firmware_default_c16(&version));
        let mut warnings = Vec::new();
        let channel_count = caller.channel_count(&config, &mut warnings).await?;
        let build = caller.build_info(&mut warnings).await?;
        let supply_voltage = caller.supply_voltage(&mut warnings).await?;
        let chip_inserted = caller.chip_inserted(&mut warnings).await?;
        let state = caller.call(&SerializeState {}, Kind::Read, t).await?;
        let state_at_connect = State::from_bytes(&state).map_err(|e| BoardError::BadMessage {
            command: SerializeState::NAME.as_str(),
            detail: e.to_string(),
        })?;
        let clock_set_at_ms = caller.set_clock(&mut warnings).await?;
        for _ in 0..CONNECT_SYNC_SAMPLES {
            caller.sync_time(t).await?;
        }
        let no_power = supply_voltage.is_some_and(|v| v < NO_POWER_BELOW_V);
        if no_power {
            tracing::warn!(
                measured_v = ?supply_voltage,
                "the board measures under {NO_POWER_BELOW_V} V: no 12 V power supply, HV will \
                 not come up"
            );
        }
        for warning in &warnings {
            tracing::warn!("at connection: {warning}");
        }
        let info = BoardInfo {
            identity,
            firmware_version: version,
            software_version,
            hardware_version,
            uuid,
            channel_count,
            build,
            supply_voltage,
            no_power,
            chip_inserted,
            clock_set_at_ms,
            connect_warnings: warnings,
            config,
            state_at_connect,
            port,
        };
        tracing::info!(identity = %info.identity, uuid = %info.uuid, port = ?info.port,
            channels = info.channel_count, "DropBot connected");
        Ok(DropBot {
            caller,
            info: Arc::new(info),
        })
    }

    /// What the board told about itself at connection.
    pub fn info(&self) -> &BoardInfo {
        &self.info
    }

    /// The same, shareable.
    pub fn info_arc(&self) -> Arc<BoardInfo> {
        self.info.clone()
    }

    /// The command table in use.
    pub fn table(&self) -> &CommandTable {
        &self.caller.table
    }

    /// The link (for its stats and close signal).
    pub fn link(&self) -> &Link {
        &self.caller.link
    }

    /// Link counters.
    pub fn stats(&self) -> LinkStats {
        self.caller.link.stats()
    }

    /// Subscribe to the board's events. A receiver that falls more than the link's
    /// `event_capacity` behind loses the oldest (`RecvError::Lagged`); the reader never waits.
    pub fn events(&self) -> broadcast::Receiver<BoardEvent> {
        self.caller.link.events()
    }

    /// Resolves when the link closes.
    pub async fn closed(&self) -> CloseReason {
        self.caller.link.closed().await
    }

    /// Whether the link is still open.
    pub fn is_connected(&self) -> bool {
        !self.caller.link.is_closed()
    }

    /// Close the link (without touching the board: call [`safe_state`](Self::safe_state) first).
    /// The port is released shortly after; use [`disconnect`](Self::disconnect) to wait for it.
    pub fn close(&self) {
        self.caller.link.close();
    }

    /// Close the link and wait until the port is released, so it can be opened again at once.
    pub async fn disconnect(&self) {
        self.caller.link.shutdown().await;
    }

    /// One time-sync round trip; returns the board's unwrapped microseconds. Call it every
    /// few seconds (the supervisor does) to keep the mapping fresh and the unwrap exact.
    pub async fn sync_time(&self) -> Result<u64, BoardError> {
        self.caller.sync_time(self.timeout()).await
    }

    /// The board's unwrapped microseconds now, estimated from the clock mapping.
    pub fn board_time_now(&self) -> Option<u64> {
        self.caller.link.with_clock(|c| c.board_at(Instant::now()))
    }

    /// The board's unwrapped microseconds at host instant `at`, from the clock mapping.
    pub fn board_time_at(&self, at: Instant) -> Option<u64> {
        self.caller.link.with_clock(|c| c.board_at(at))
    }

    /// Host time at which the board's unwrapped counter reads `board_us`.
    pub fn host_time_of(&self, board_us: u64) -> Option<Instant> {
        self.caller.link.with_clock(|c| c.host_at(board_us))
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.caller.link.options().request_timeout
    }

    pub(crate) async fn call_timed<C: Command>(
        &self,
        command: &C,
        kind: Kind,
        timeout: Duration,
    ) -> Result<(C::Reply, CallTiming), BoardError> {
        self.caller.call_timed(command, kind, timeout).await
    }

    /// A call from a plain thread (not inside an async runtime): the thread writes the
    /// request and blocks on the reply, written no earlier than `at` (see
    /// [`Link::request_blocking_at`]). For the actuation engine's own thread.
    pub(crate) fn call_blocking<C: Command>(
        &self,
        command: &C,
        kind: Kind,
        timeout: Duration,
        at: Option<Instant>,
    ) -> Result<(C::Reply, CallTiming), BoardError> {
        self.caller.call_blocking(command, kind, timeout, at)
    }

    /// [`DropBot::sync_time`] from a plain thread.
    pub fn sync_time_blocking(&self) -> Result<u64, BoardError> {
        let (raw, t) = self.call_blocking(&Microseconds {}, Kind::Read, self.timeout(), None)?;
        Ok(self
            .caller
            .link
            .with_clock(|c| c.add_sample(raw, t.sent, t.received)))
    }

    pub(crate) async fn call<C: Command>(
        &self,
        command: &C,
        kind: Kind,
        timeout: Duration,
    ) -> Result<C::Reply, BoardError> {
        self.caller.call(command, kind, timeout).await
    }
}

/// After a request was given up, the link gets back in step with `echo_array([nonce])`
/// (base-node-rpc `BaseNode.h`): the firmware answers in order and never echoes ids, so every
/// reply before the nonce's is a late one.
fn set_resync_probe(link: &Link, table: &CommandTable) {
    if !table.has(EchoArray::NAME) {
        tracing::debug!("no echo_array in this command table: late replies are counted off");
        return;
    }
    let table = table.clone();
    link.set_resync_probe(std::sync::Arc::new(move |nonce: u32| {
        let payload = EchoArray { array: vec![nonce] }
            .encode(&table)
            .unwrap_or_default();
        (payload, nonce.to_le_bytes().to_vec())
    }));
}

/// 16 bytes as a hyphenated UUID; anything else as plain hex.
fn format_uuid(bytes: &[u8]) -> String {
    match uuid::Uuid::from_slice(bytes) {
        Ok(u) => u.hyphenated().to_string(),
        Err(_) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_formats() {
        let bytes: Vec<u8> = (0..16).collect();
        assert_eq!(format_uuid(&bytes), "00010203-0405-0607-0809-0a0b0c0d0e0f");
        assert_eq!(format_uuid(&[0xAB, 1]), "ab01");
    }
}
