//! A minimal host for tests of the simulated board: the `firmware-protocol` crate over a
//! serial port opened by path (the real open path), one request at a time, events kept aside.
//! Like the firmware it talks to, it does not rely on request ids: the board answers every
//! request with id 0, so the next DATA packet is the reply.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use firmware_protocol::channels::{pack, unpack};
use firmware_protocol::commands::{
    SerializeState, SetStateOfChannels, StateOfChannels, UpdateState,
};
use firmware_protocol::{
    ChannelError, Command, CommandTable, Decoder, DecoderStats, EncodeError, Event, Packet,
    RpcError, State, StateError, TableError,
};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::{SerialPortBuilderExt, SerialStream};

use dropbot_plugin::sim::{
    spawn_pty, table_for_id, SimError, SimHandle, SimOptions, DEFAULT_FIRMWARE_VERSION,
};

/// How long [`SimHost`] waits for a reply by default.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// What can go wrong on the host side.
#[derive(Debug, thiserror::Error)]
pub enum SimHostError {
    /// Opening, reading or writing the port failed.
    #[error("serial I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Opening the port failed.
    #[error("serial open: {0}")]
    Open(#[from] tokio_serial::Error),
    /// Nothing (suitable) arrived in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    /// The port reported end of file (the board was unplugged).
    #[error("end of file on the port")]
    Eof,
    /// A packet that cannot be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A command the table does not have.
    #[error(transparent)]
    Table(#[from] TableError),
    /// A reply that does not decode.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// A state that does not decode.
    #[error(transparent)]
    State(#[from] StateError),
    /// Channels that do not fit the board.
    #[error(transparent)]
    Channels(#[from] ChannelError),
    /// The simulator failed.
    #[error(transparent)]
    Sim(#[from] SimError),
}

/// Simulator options for conformance tests: no artificial delays, and a virtual clock so that
/// time-driven behaviour happens only when a test advances it.
pub fn fast_virtual() -> SimOptions {
    SimOptions {
        timing: dropbot_plugin::sim::Timing::Fast,
        virtual_clock: true,
        ..SimOptions::default()
    }
}

/// A simulated board on a fresh pty and a host connected to it.
pub async fn connect(opts: SimOptions) -> Result<(SimHandle, SimHost), SimHostError> {
    let channels = opts.channels;
    let table = table_for_id(&opts.firmware_id);
    let sim = spawn_pty(opts).await?;
    let mut host = SimHost::open(&sim.path()).await?;
    host.channel_count = channels;
    host.table = table;
    Ok((sim, host))
}

/// A host talking to a board over a serial port (usually a simulator's pty).
#[derive(Debug)]
pub struct SimHost {
    port: SerialStream,
    decoder: Decoder,
    table: CommandTable,
    packets: VecDeque<Packet>,
    events: VecDeque<Event>,
    next_id: u16,
    /// How long calls wait for their reply.
    pub timeout: Duration,
    /// The board's channel count, for packing channel sets.
    pub channel_count: u16,
}

impl SimHost {
    /// Open `path` at 115200 baud, as a host opens a DropBot.
    pub async fn open(path: &Path) -> Result<Self, SimHostError> {
        let port = tokio_serial::new(path.to_string_lossy(), 115_200).open_native_async()?;
        Ok(Self {
            port,
            decoder: Decoder::new(),
            table: table_for_id(&format!("dropbot::{DEFAULT_FIRMWARE_VERSION}")),
            packets: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 1,
            timeout: REPLY_TIMEOUT,
            channel_count: 120,
        })
    }

    /// The command table in use (the default firmware version's unless set).
    pub fn table(&self) -> &CommandTable {
        &self.table
    }

    /// Speak `table` from now on (a board reporting another firmware version).
    pub fn set_table(&mut self, table: CommandTable) {
        self.table = table;
    }

    /// What the decoder saw (CRC errors and so on).
    pub fn stats(&self) -> DecoderStats {
        self.decoder.stats()
    }

    /// A fresh request id (never one with a `'|'` high byte).
    pub fn fresh_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1) % 0x7C00;
        id
    }

    /// Write raw bytes.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), SimHostError> {
        self.port.write_all(bytes).await?;
        Ok(())
    }

    /// Send one packet.
    pub async fn send(&mut self, packet: &Packet) -> Result<(), SimHostError> {
        let bytes = packet.to_bytes()?;
        self.write_raw(&bytes).await
    }

    /// The next packet of any type within `timeout`.
    pub async fn next_packet(&mut self, timeout: Duration) -> Result<Packet, SimHostError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut buf = [0u8; 1024];
        loop {
            if let Some(p) = self.packets.pop_front() {
                return Ok(p);
            }
            let read = tokio::time::timeout_at(deadline, self.port.read(&mut buf)).await;
            let n = read.map_err(|_| SimHostError::Timeout(timeout, "a packet"))??;
            if n == 0 {
                return Err(SimHostError::Eof);
            }
            let packets = &mut self.packets;
            self.decoder
                .feed(buf.get(..n).unwrap_or_default(), |p| packets.push_back(p));
        }
    }

    /// Wait for a packet accepted by `want`; events met on the way are kept, others dropped.
    async fn wait_for(
        &mut self,
        what: &'static str,
        mut want: impl FnMut(&Packet) -> bool,
    ) -> Result<Packet, SimHostError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let packet = match self.next_packet(left).await {
                Err(SimHostError::Timeout(..)) => {
                    // A corrupted length can hold the decoder in a false packet for up to
                    // 1 KiB of later bytes: after a timeout, start afresh.
                    self.decoder.reset();
                    return Err(SimHostError::Timeout(self.timeout, what));
                }
                other => other?,
            };
            if want(&packet) {
                return Ok(packet);
            }
            if let Packet::Stream { payload, .. } = &packet {
                if let Ok(event) = Event::parse(payload) {
                    self.events.push_back(event);
                }
            }
        }
    }

    /// The ID handshake: the board's identity text.
    pub async fn handshake(&mut self) -> Result<String, SimHostError> {
        let id = self.fresh_id();
        self.send(&Packet::IdRequest { id }).await?;
        let reply = self
            .wait_for("an ID response", |p| matches!(p, Packet::IdResponse { .. }))
            .await?;
        Ok(String::from_utf8_lossy(reply.payload()).into_owned())
    }

    /// Send a request payload; the reply payload (the next DATA packet: the firmware answers
    /// with id 0).
    pub async fn call_raw(&mut self, payload: Vec<u8>) -> Result<Vec<u8>, SimHostError> {
        let id = self.fresh_id();
        self.send(&Packet::Data { id, payload }).await?;
        let reply = self
            .wait_for("a reply", |p| matches!(p, Packet::Data { .. }))
            .await?;
        Ok(reply.payload().to_vec())
    }

    /// Call a command and decode its reply.
    pub async fn call<C: Command>(&mut self, command: C) -> Result<C::Reply, SimHostError> {
        let payload = command.encode(&self.table)?;
        let reply = self.call_raw(payload).await?;
        Ok(C::decode_reply(&reply)?)
    }

    /// The next event within `timeout` (kept ones first).
    pub async fn next_event(&mut self, timeout: Duration) -> Result<Event, SimHostError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(e);
        }
        let saved = std::mem::replace(&mut self.timeout, timeout);
        let got = self
            .wait_for(
                "an event",
                |p| matches!(p, Packet::Stream { payload, .. } if Event::parse(payload).is_ok()),
            )
            .await;
        self.timeout = saved;
        match got? {
            Packet::Stream { payload, .. } => Event::parse(&payload)
                .map_err(|_| SimHostError::Timeout(timeout, "a parsable event")),
            _ => Err(SimHostError::Timeout(timeout, "an event")),
        }
    }

    /// The first event accepted by `want` within `timeout`; others are dropped.
    pub async fn wait_event(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&Event) -> bool,
    ) -> Result<Event, SimHostError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next_event(left).await?;
            if want(&event) {
                return Ok(event);
            }
        }
    }

    /// Events received while waiting for replies, oldest first (taken out).
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// Read raw bytes once (for end-of-file and error checks).
    pub async fn read_raw(&mut self, timeout: Duration) -> Result<Vec<u8>, SimHostError> {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(timeout, self.port.read(&mut buf))
            .await
            .map_err(|_| SimHostError::Timeout(timeout, "bytes"))??;
        Ok(buf.get(..n).unwrap_or_default().to_vec())
    }

    /// `update_state` with the fields of `update`; whether the board accepted it.
    pub async fn update_state(&mut self, update: State) -> Result<bool, SimHostError> {
        let state = update.encode_to_vec();
        self.call(UpdateState { serialized: state })
            .await
            .map(|decoded| decoded != 0)
    }

    /// The board state (`serialize_state`).
    pub async fn state(&mut self) -> Result<State, SimHostError> {
        let bytes = self.call(SerializeState {}).await?;
        Ok(State::from_bytes(&bytes)?)
    }

    /// `set_state_of_channels` with these channels on.
    pub async fn set_channels(&mut self, channels: &[u16]) -> Result<bool, SimHostError> {
        let states = pack(channels.iter().copied(), self.channel_count)?;
        self.call(SetStateOfChannels {
            channel_states: states,
        })
        .await
    }

    /// The actuated channels (`state_of_channels`).
    pub async fn channels(&mut self) -> Result<Vec<u16>, SimHostError> {
        let bytes = self.call(StateOfChannels {}).await?;
        Ok(unpack(&bytes).into_iter().collect())
    }
}
