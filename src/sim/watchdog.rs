//! The MCU watchdog (the Kinetis K20 WDOG) as the DropBot firmware drives it.
//!
//! - At boot `setup()` calls `watchdog_enable(0, 10000)` and `watchdog_auto_refresh(true)`
//!   (sci-bots/dropbot.py `src/dropbot.ino`; the Blue-Ocean fork only when the config's
//!   `watchdog_enabled` is true).
//! - With auto-refresh on, `loop()` calls `watchdog_refresh()` on every pass
//!   (`dropbot.ino` `loop`), so the MCU resets only if one pass (a command, or work of the
//!   loop itself) takes longer than the timeout; `delay()` inside a command does not refresh.
//! - `watchdog_refresh()` refreshes only when at least 2 ticks passed since the last refresh
//!   (`if (WDOG_TMROUTL >= 2)`, `Node.h`).
//! - `watchdog_enable(prescaler, timeout)` writes `timeout` to `WDOG_TOVAL` with the 1 kHz LPO
//!   clock (`WDOG_STCTRLH` = `ALLOWUPDATE | WDOGEN`, `CLKSRC` = 0), so the timeout counts
//!   milliseconds; `prescaler` goes to the low bits of `WDOG_PRESC`, which the K20 reference
//!   manual marks reserved (the divider, `PRESCVAL`, is bits 8-10), so it does not divide (as
//!   read from the manual, not measured). A prescaler over 15 answers -1; the firmware then
//!   returns with interrupts still disabled, which is not modelled. Enabling turns
//!   auto-refresh on again.
//! - `watchdog_disable()` turns auto-refresh off and the WDOG off.
//!
//! A host that wants the board to fail safe when the host dies turns auto-refresh off and calls
//! `watchdog_refresh` more often than the timeout: if it stops, the MCU resets (HV and channels
//! off, the USB device re-enumerates).

use std::time::Duration;

/// Ticks (ms) that must pass before `watchdog_refresh` refreshes.
const MIN_REFRESH_TICKS: Duration = Duration::from_millis(2);
/// The timeout `setup()` asks for.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(10);

/// The watchdog's registers as the firmware sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McuWatchdog {
    enabled: bool,
    timeout: Duration,
    auto_refresh: bool,
    last_refresh: Duration,
}

impl McuWatchdog {
    /// The watchdog after `setup()` at `now`: enabled with auto-refresh if `at_boot`.
    pub fn boot(at_boot: bool, now: Duration) -> Self {
        Self {
            enabled: at_boot,
            timeout: BOOT_TIMEOUT,
            auto_refresh: at_boot,
            last_refresh: now,
        }
    }

    /// `watchdog_enable(prescaler, timeout)`: 0, or -1 for a prescaler over 15.
    pub fn enable(&mut self, prescaler: u8, timeout_ticks: u32, now: Duration) -> i8 {
        if prescaler > 15 {
            return -1;
        }
        self.enabled = true;
        self.timeout = Duration::from_millis(u64::from(timeout_ticks));
        self.auto_refresh = true;
        self.last_refresh = now;
        0
    }

    /// `watchdog_disable()`.
    pub fn disable(&mut self) {
        self.auto_refresh = false;
        self.enabled = false;
    }

    /// `watchdog_auto_refresh(value)`: whether the setting changed.
    pub fn set_auto_refresh(&mut self, value: bool) -> bool {
        let changed = value != self.auto_refresh;
        self.auto_refresh = value;
        changed
    }

    /// `watchdog_refresh()` at `now`.
    pub fn refresh(&mut self, now: Duration) {
        if now.saturating_sub(self.last_refresh) >= MIN_REFRESH_TICKS {
            self.last_refresh = now;
        }
    }

    /// A pass of `loop()` starting at `now` (refreshes when auto-refresh is on).
    pub fn loop_pass(&mut self, now: Duration) {
        if self.auto_refresh {
            self.refresh(now);
        }
    }

    /// When the MCU resets unless refreshed (`None`: the watchdog is off).
    pub fn deadline(&self) -> Option<Duration> {
        self.enabled.then(|| self.last_refresh + self.timeout)
    }

    /// Whether it is enabled, and with which timeout and auto-refresh.
    pub fn settings(&self) -> (bool, Duration, bool) {
        (self.enabled, self.timeout, self.auto_refresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn boots_enabled_and_resets_only_without_refresh() {
        let mut wd = McuWatchdog::boot(true, Duration::ZERO);
        assert_eq!(wd.deadline(), Some(BOOT_TIMEOUT));
        wd.loop_pass(MS * 5);
        assert_eq!(wd.deadline(), Some(BOOT_TIMEOUT + MS * 5));
        assert!(wd.set_auto_refresh(false));
        wd.loop_pass(MS * 100);
        assert_eq!(
            wd.deadline(),
            Some(BOOT_TIMEOUT + MS * 5),
            "no auto refresh"
        );
        wd.refresh(MS * 6);
        assert_eq!(wd.deadline(), Some(BOOT_TIMEOUT + MS * 5), "within 2 ticks");
        wd.refresh(MS * 7);
        assert_eq!(wd.deadline(), Some(BOOT_TIMEOUT + MS * 7));
        assert_eq!(wd.enable(16, 500, MS * 8), -1);
        assert_eq!(wd.enable(0, 500, MS * 8), 0);
        assert_eq!(wd.settings(), (true, MS * 500, true));
        wd.disable();
        assert_eq!(wd.deadline(), None);
        assert_eq!(McuWatchdog::boot(false, MS).deadline(), None);
    }
}
