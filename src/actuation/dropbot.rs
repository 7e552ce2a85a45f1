//! The DropBot behind the engine's board trait. The typed API is async; the engine's thread
//! writes its frames with the link's blocking request path and drives the rarer calls to
//! completion with the runtime's `Handle::block_on`, so a frame is written from the engine's
//! thread itself, at its deadline, with no hop through another task.

use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use super::board::{BoardSummary, DmfBoard, KeepAlive, Monitor, Reading, Stamp};
use crate::board::{BoardError, CallTiming, DropBot, EventSink, LinkError};
use firmware_protocol::{Config, State};

/// Keep-alives per clock sync while the failsafe is refreshed (one a second: a sync every 5 s).
const KEEPALIVES_PER_SYNC: u32 = 5;
/// Keep-alives without room before the sync goes anyway (the sync also tells a board that
/// restarted): while a sequence leaves no room, one is forced every two seconds (30 s).
const KEEPALIVES_PER_FORCED_SYNC: u32 = 15;
/// A board clock that jumped back by more than this means the board restarted.
const RESET_TOLERANCE_US: u64 = 500_000;
/// The watchdog timeout the firmware sets itself at boot, ms (dropbot.py `dropbot.ino`
/// `setup()`: `watchdog_enable(0, 10000)`, a 1 kHz clock).
const FIRMWARE_WATCHDOG_MS: u32 = 10_000;
/// Time per channel of short detection on top of its delay, ms (a generous bound: the
/// firmware switches one channel at a time over I2C).
const SHORT_TEST_OVERHEAD_MS: u32 = 15;

/// A [`DropBot`] driven by blocking calls.
pub struct DropBotBoard {
    bot: DropBot,
    rt: Handle,
    /// False once the runtime drops its tasks (it is shutting down): no more calls.
    runtime_alive: Arc<AtomicBool>,
    event_mask: u32,
    /// The MCU watchdog timeout, ms, while it is ours to refresh (its automatic refresh off).
    failsafe_timeout: Option<u32>,
    /// Keep-alives since the last clock sync.
    since_sync: u32,
}

impl DropBotBoard {
    /// Drive `bot` from the engine's thread; `rt` runs its link; `event_mask` says which
    /// gated events the board should send (set when the engine takes it).
    pub fn new(bot: DropBot, rt: Handle, event_mask: u32) -> Self {
        let runtime_alive = Arc::new(AtomicBool::new(true));
        let guard = Lifeline(runtime_alive.clone());
        // A task that never ends: the runtime drops it when it shuts down.
        rt.spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        DropBotBoard {
            bot,
            rt,
            runtime_alive,
            event_mask,
            failsafe_timeout: None,
            since_sync: 0,
        }
    }

    /// Drive one call of the async API to completion on this thread. A runtime that is
    /// shutting down (the process is ending) makes tokio panic inside; that is a link that
    /// is gone, not a reason for this thread to die.
    fn block<T>(&self, call: impl Future<Output = Result<T, BoardError>>) -> Result<T, BoardError> {
        self.alive()?;
        std::panic::catch_unwind(AssertUnwindSafe(|| self.rt.block_on(call)))
            .unwrap_or(Err(BoardError::Link(LinkError::Closed)))
    }

    /// A runtime shutting down takes the link's reader with it: no more calls then.
    fn alive(&self) -> Result<(), BoardError> {
        match self.runtime_alive.load(Ordering::Acquire) {
            true => Ok(()),
            false => Err(BoardError::Link(LinkError::Closed)),
        }
    }

    fn stamp(&self, t: CallTiming) -> Stamp {
        Stamp {
            issued: t.sent,
            written: t.written,
            confirmed: t.received,
            board_us: self.bot.board_time_at(t.written),
        }
    }

    /// The phase frame: written by this thread itself, no hop through the runtime.
    fn channels(
        &mut self,
        channels: &BTreeSet<u16>,
        at: Option<Instant>,
    ) -> Result<Stamp, BoardError> {
        self.alive()?;
        let t = self.bot.set_channels_blocking(channels, at)?;
        Ok(self.stamp(t))
    }

    fn state(&mut self, update: State) -> Result<Stamp, BoardError> {
        self.alive()?;
        let t = self.bot.update_state_blocking(&update)?;
        Ok(self.stamp(t))
    }
}

/// Clears the flag when dropped.
struct Lifeline(Arc<AtomicBool>);

impl Drop for Lifeline {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl DmfBoard for DropBotBoard {
    fn summary(&self) -> BoardSummary {
        let info = self.bot.info();
        BoardSummary {
            channel_count: info.channel_count,
            identity: info.identity.clone(),
            serial: info.uuid.clone(),
            uptime: self.bot.board_time_now().map(Duration::from_micros),
        }
    }

    fn prepare(&mut self) -> Result<(), BoardError> {
        self.block(self.bot.take_for_host(self.event_mask))
            .map(|_| ())
    }

    fn set_channels(&mut self, channels: &BTreeSet<u16>) -> Result<Stamp, BoardError> {
        self.channels(channels, None)
    }

    fn set_channels_at(
        &mut self,
        channels: &BTreeSet<u16>,
        at: Instant,
    ) -> Result<Stamp, BoardError> {
        self.channels(channels, Some(at))
    }

    fn set_waveform(
        &mut self,
        voltage: Option<f32>,
        frequency: Option<f32>,
    ) -> Result<Stamp, BoardError> {
        self.state(State {
            voltage,
            frequency,
            ..State::default()
        })
    }

    fn set_hv(&mut self, on: bool) -> Result<Stamp, BoardError> {
        self.state(State {
            hv_output_enabled: Some(on),
            ..State::default()
        })
    }

    fn halt(&mut self) -> Result<(), BoardError> {
        self.block(self.bot.halt())
    }

    /// The firmware's MCU watchdog resets the board unless refreshed in time; its own main
    /// loop refreshes it (dropbot.py `dropbot.ino` `loop()`, while `watchdog_refresh_`).
    /// With that automatic refresh off, only this host refreshes it: if the host dies or
    /// hangs, the board restarts, and a restarted board has HV and every channel off.
    fn arm_failsafe(&mut self, timeout: Duration) -> Result<bool, BoardError> {
        let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        match self.block(self.bot.watchdog_enable(0, ms)) {
            Ok(()) => {}
            Err(BoardError::NoTable(_) | BoardError::Unsupported { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        self.block(self.bot.watchdog_auto_refresh(false))?;
        self.failsafe_timeout = Some(ms);
        Ok(true)
    }

    /// Back to the firmware's own behaviour: its loop refreshes the watchdog, with the
    /// timeout (or the disabled watchdog) it sets at boot.
    fn disarm_failsafe(&mut self) -> Result<(), BoardError> {
        if self.failsafe_timeout.take().is_none() {
            return Ok(());
        }
        if self.bot.info().config.watchdog_enabled() {
            self.block(self.bot.watchdog_enable(0, FIRMWARE_WATCHDOG_MS))?;
            self.block(self.bot.watchdog_auto_refresh(true)).map(|_| ())
        } else {
            self.block(self.bot.watchdog_disable())
        }
    }

    /// The watchdog refresh while the failsafe is ours; the clock sync (which also tells a
    /// board that restarted under an open link) every few keep-alives with room, or every time
    /// without a failsafe; without room (between two phases) at most one round trip, and the
    /// sync only when it was put off for too long.
    fn keepalive(&mut self, room: bool) -> Result<KeepAlive, BoardError> {
        self.alive()?;
        self.since_sync += 1;
        // Without room the sync (a second round trip: ~5 ms on a DropBot, whose USB flush
        // timer holds each reply) waits for a keep-alive with room, up to a limit.
        let sync_due = match room {
            true => self.since_sync >= KEEPALIVES_PER_SYNC,
            false => self.since_sync >= KEEPALIVES_PER_FORCED_SYNC,
        };
        if self.failsafe_timeout.is_some() {
            self.bot.watchdog_refresh_blocking()?;
        }
        if !sync_due && (self.failsafe_timeout.is_some() || !room) {
            return Ok(KeepAlive::default());
        }
        self.since_sync = 0;
        let expected = self.bot.board_time_now();
        let now = self.bot.sync_time_blocking()?;
        let board_reset = expected.is_some_and(|e| now + RESET_TOLERANCE_US < e);
        Ok(KeepAlive { board_reset })
    }

    fn disabled_channels(&mut self) -> Result<BTreeSet<u16>, BoardError> {
        self.block(self.bot.disabled_channels())
    }

    fn set_disabled_channels(&mut self, channels: &BTreeSet<u16>) -> Result<(), BoardError> {
        self.block(self.bot.set_disabled_channels(channels))
    }

    /// One firmware call that blocks its main loop for every channel: with `delay_ms` 255 over
    /// 120 channels that is ~31 s, past any watchdog, so while the failsafe is ours its
    /// timeout is stretched for the call and set back after.
    fn detect_shorts(&mut self, delay_ms: u8) -> Result<Vec<u16>, BoardError> {
        let Some(normal) = self.failsafe_timeout else {
            return self.block(self.bot.detect_shorts(delay_ms));
        };
        let channels = u32::from(self.bot.info().channel_count);
        let expected = channels * (u32::from(delay_ms) + SHORT_TEST_OVERHEAD_MS);
        let stretched = normal.max(expected.saturating_mul(2).saturating_add(2_000));
        self.block(self.bot.watchdog_enable(0, stretched))?;
        let shorts = self.block(self.bot.detect_shorts(delay_ms));
        let restored = self.block(self.bot.watchdog_enable(0, normal));
        let shorts = shorts?;
        restored?;
        Ok(shorts)
    }

    fn channel_capacitances(&mut self, channels: &[u16]) -> Result<Vec<f32>, BoardError> {
        self.block(self.bot.channel_capacitances(channels))
    }

    fn capacitance(&mut self) -> Result<Reading, BoardError> {
        let sent = Instant::now();
        let farads = self.block(self.bot.capacitance(0))?;
        let confirmed = Instant::now();
        Ok(Reading {
            farads: f64::from(farads),
            stamp: Stamp {
                issued: sent,
                written: sent,
                confirmed,
                board_us: self.bot.board_time_at(sent),
            },
        })
    }

    fn measured_voltage(&mut self) -> Result<f32, BoardError> {
        self.block(self.bot.high_voltage())
    }

    fn set_capacitance_stream(&mut self, interval_ms: u32) -> Result<(), BoardError> {
        self.state(State {
            capacitance_update_interval_ms: Some(interval_ms),
            ..State::default()
        })
        .map(|_| ())
    }

    fn set_capacitance_target(&mut self, farads: f32) -> Result<bool, BoardError> {
        // One sample at or above the target is enough: the engine reacts to the first.
        // Not read back: the engine watches the stream itself, and this call sits between a
        // feedback phase's frame and its first sample.
        let target_count = (farads > 0.0).then_some(1.0);
        self.alive()?;
        self.bot
            .update_state_unconfirmed_blocking(&State {
                target_capacitance: Some(farads),
                target_count,
                ..State::default()
            })
            .map(|_| true)
    }

    fn board_time(&self, at: Instant) -> Option<u64> {
        self.bot.board_time_at(at)
    }

    /// What dropbot.py's `monitor.py` and hardware tests read: `high_voltage`,
    /// `output_current_rms`, `input_current_rms`, `measure_temperature`, pin 22. A reading
    /// that fails leaves its field empty; a link that is gone fails the whole.
    fn monitor(&mut self) -> Result<Monitor, BoardError> {
        let at = Instant::now();
        let keep = |r: Result<f32, BoardError>| match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_gone() => Err(e),
            Err(_) => Ok(None),
        };
        let measured_voltage = keep(self.block(self.bot.high_voltage()))?;
        let output_current = keep(self.block(self.bot.output_current_rms()))?;
        let input_current = keep(self.block(self.bot.input_current_rms()))?;
        let temperature_c = keep(self.block(self.bot.measure_temperature()))?;
        let chip_inserted = match self.block(self.bot.chip_inserted()) {
            Ok(c) => Some(c),
            Err(e) if e.is_gone() => return Err(e),
            Err(_) => None,
        };
        Ok(Monitor {
            measured_voltage,
            output_current,
            input_current,
            temperature_c,
            chip_inserted,
            at,
            board_us: self.bot.board_time_at(at),
        })
    }

    fn select_test_capacitor(&mut self, index: Option<u8>) -> Result<f64, BoardError> {
        let index = index.and_then(|i| i8::try_from(i).ok()).unwrap_or(-1);
        let nominal = self.block(self.bot.select_on_board_test_capacitor(index))?;
        Ok(f64::from(nominal))
    }

    fn feedback_capacitor(&mut self) -> Result<f64, BoardError> {
        let config = self.block(self.bot.config())?;
        Ok(f64::from(config.c16()))
    }

    fn set_feedback_capacitor(&mut self, farads: f64) -> Result<(), BoardError> {
        let update = Config {
            c16: Some(farads as f32),
            ..Config::default()
        };
        self.block(self.bot.update_config(&update))
    }

    fn set_event_sink(&mut self, sink: Option<EventSink>) {
        self.bot.link().set_event_sink(sink);
    }
}
