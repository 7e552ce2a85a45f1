//! The typed API, continued: currents, temperature, pins, the board's clocks, build
//! properties, echo calls and the MCU watchdog.

use std::time::Duration;

use firmware_protocol::commands::{
    BaseNodeSoftwareVersion, DigitalRead, DisplayName, EchoArray, InitializeSwitchingBoards,
    InputCurrent, InputCurrentRms, Manufacturer, MeasureTemperature, Milliseconds, OutputCurrent,
    OutputCurrentRms, PackageName, SelectOnBoardTestCapacitor, SerializeConfig, StrEcho, SyncTime,
    UpdateConfig, Url, WallTime, WatchdogAutoRefresh, WatchdogDisable, WatchdogEnable,
    WatchdogRefresh,
};
use firmware_protocol::{Command, Config};

use crate::board::dropbot::{DropBot, Kind};
use crate::board::error::BoardError;

/// Time for a scan of the I2C bus for switching boards.
const SWITCHING_BOARD_SCAN_TIME: Duration = Duration::from_millis(500);
/// The chip interlock input: low while a chip is inserted (dropbot.py `monitor.py`,
/// `OUTPUT_ENABLE_PIN`).
const OUTPUT_ENABLE_PIN: u8 = 22;
/// Largest prescaler of the MCU watchdog; the firmware answers -1 above it.
const MAX_WATCHDOG_PRESCALER: u8 = 15;

impl DropBot {
    /// RMS output current, amperes.
    pub async fn output_current_rms(&self) -> Result<f32, BoardError> {
        self.call(&OutputCurrentRms {}, Kind::Read, self.timeout())
            .await
    }

    /// Peak output current, amperes.
    pub async fn output_current(&self) -> Result<f32, BoardError> {
        self.call(&OutputCurrent {}, Kind::Read, self.timeout())
            .await
    }

    /// RMS input supply current, amperes.
    pub async fn input_current_rms(&self) -> Result<f32, BoardError> {
        self.call(&InputCurrentRms {}, Kind::Read, self.timeout())
            .await
    }

    /// Peak input supply current, amperes.
    pub async fn input_current(&self) -> Result<f32, BoardError> {
        self.call(&InputCurrent {}, Kind::Read, self.timeout())
            .await
    }

    /// MCU temperature, degrees Celsius.
    pub async fn measure_temperature(&self) -> Result<f32, BoardError> {
        self.call(&MeasureTemperature {}, Kind::Read, self.timeout())
            .await
    }

    /// Connect on-board test capacitor `index` (0: 1 pF, 1: 10 pF, 2: 100 pF; -1: none) to
    /// the HV output; the nominal capacitance now connected, farads (dropbot.py `Node.h`
    /// `select_on_board_test_capacitor`, firmware 1.73 on).
    pub async fn select_on_board_test_capacitor(&self, index: i8) -> Result<f32, BoardError> {
        self.call(
            &SelectOnBoardTestCapacitor { index },
            Kind::Write,
            self.timeout(),
        )
        .await
    }

    /// The configuration as the board has it now (`serialize_config`).
    pub async fn config(&self) -> Result<Config, BoardError> {
        let bytes = self
            .call(&SerializeConfig {}, Kind::Read, self.timeout())
            .await?;
        Config::from_bytes(&bytes).map_err(|e| BoardError::BadMessage {
            command: SerializeConfig::NAME.as_str(),
            detail: e.to_string(),
        })
    }

    /// Merge `update` into the configuration (in RAM: `save_config` would keep it); the
    /// firmware answers whether it decoded.
    pub async fn update_config(&self, update: &Config) -> Result<(), BoardError> {
        let serialized = update.to_bytes();
        let decoded = self
            .call(&UpdateConfig { serialized }, Kind::Write, self.timeout())
            .await?;
        match decoded {
            0 => Err(BoardError::Refused {
                command: UpdateConfig::NAME.as_str(),
                detail: "the board could not decode the configuration".into(),
            }),
            _ => Ok(()),
        }
    }

    /// Level of a digital pin (0 or 1).
    pub async fn digital_read(&self, pin: u8) -> Result<u8, BoardError> {
        self.call(&DigitalRead { pin }, Kind::Read, self.timeout())
            .await
    }

    /// Whether a chip is inserted: the interlock pin reads low (dropbot.py `monitor.py`).
    pub async fn chip_inserted(&self) -> Result<bool, BoardError> {
        Ok(self.digital_read(OUTPUT_ENABLE_PIN).await? == 0)
    }

    /// Scan the I2C bus for HV switching boards (the firmware does so only at boot); returns
    /// the channel count found. The count read at connection is not updated.
    pub async fn initialize_switching_boards(&self) -> Result<u16, BoardError> {
        self.call(
            &InitializeSwitchingBoards {},
            Kind::Write,
            self.timeout() + SWITCHING_BOARD_SCAN_TIME,
        )
        .await
    }

    /// Set the board's wall clock (used in its `halted` events) to `unix_seconds`; returns the
    /// board's millisecond counter at that moment.
    pub async fn set_wall_time(&self, unix_seconds: f64) -> Result<u32, BoardError> {
        if !unix_seconds.is_finite() {
            return Err(BoardError::OutOfRange {
                what: "wall time (s)".into(),
                value: unix_seconds,
                allowed: "a finite number of seconds since 1970".into(),
            });
        }
        self.call(
            &SyncTime {
                wall_time: unix_seconds,
            },
            Kind::Write,
            self.timeout(),
        )
        .await
    }

    /// The board's wall clock, Unix seconds (seconds since boot if never set).
    pub async fn wall_time(&self) -> Result<f64, BoardError> {
        self.call(&WallTime {}, Kind::Read, self.timeout()).await
    }

    /// The board's millisecond counter.
    pub async fn milliseconds(&self) -> Result<u32, BoardError> {
        self.call(&Milliseconds {}, Kind::Read, self.timeout())
            .await
    }

    /// `echo_array`: the board returns `values` as sent.
    pub async fn echo_array(&self, values: &[u32]) -> Result<Vec<u32>, BoardError> {
        self.call(
            &EchoArray {
                array: values.to_vec(),
            },
            Kind::Read,
            self.timeout(),
        )
        .await
    }

    /// `str_echo`: the board returns `bytes` as sent.
    pub async fn str_echo(&self, bytes: &[u8]) -> Result<Vec<u8>, BoardError> {
        self.call(
            &StrEcho {
                msg: bytes.to_vec(),
            },
            Kind::Read,
            self.timeout(),
        )
        .await
    }

    /// The build's properties: base-node-rpc version, package name, display name,
    /// manufacturer and URL, as (name, text) pairs.
    pub async fn build_properties(&self) -> Result<Vec<(String, String)>, BoardError> {
        let t = self.timeout();
        Ok(vec![
            (
                "base_node_software_version".to_owned(),
                self.call(&BaseNodeSoftwareVersion {}, Kind::Read, t)
                    .await?,
            ),
            (
                "package_name".to_owned(),
                self.call(&PackageName {}, Kind::Read, t).await?,
            ),
            (
                "display_name".to_owned(),
                self.call(&DisplayName {}, Kind::Read, t).await?,
            ),
            (
                "manufacturer".to_owned(),
                self.call(&Manufacturer {}, Kind::Read, t).await?,
            ),
            ("url".to_owned(), self.call(&Url {}, Kind::Read, t).await?),
        ])
    }

    /// Enable the MCU watchdog: it resets the board unless refreshed within `timeout` ticks
    /// of its clock divided by `prescaler + 1` (at most 15). The firmware also turns on its
    /// automatic refresh from the main loop; turn that off with
    /// [`watchdog_auto_refresh`](Self::watchdog_auto_refresh) to make the host refresh it.
    pub async fn watchdog_enable(&self, prescaler: u8, timeout: u32) -> Result<(), BoardError> {
        if prescaler > MAX_WATCHDOG_PRESCALER {
            // The firmware answers -1 but leaves interrupts off: never send it.
            return Err(BoardError::OutOfRange {
                what: "watchdog prescaler".into(),
                value: f64::from(prescaler),
                allowed: format!("0 to {MAX_WATCHDOG_PRESCALER}"),
            });
        }
        let status = self
            .call(
                &WatchdogEnable { prescaler, timeout },
                Kind::Write,
                self.timeout(),
            )
            .await?;
        self.accepted::<WatchdogEnable>(status == 0, || {
            format!("prescaler {prescaler}, timeout {timeout}: status {status}")
        })
    }

    /// Disable the MCU watchdog and its automatic refresh.
    pub async fn watchdog_disable(&self) -> Result<(), BoardError> {
        self.call(&WatchdogDisable {}, Kind::Write, self.timeout())
            .await
    }

    /// Refresh the MCU watchdog.
    pub async fn watchdog_refresh(&self) -> Result<(), BoardError> {
        self.call(&WatchdogRefresh {}, Kind::Write, self.timeout())
            .await
    }

    /// [`DropBot::watchdog_refresh`] from a plain thread (the actuation engine's keep-alive).
    pub fn watchdog_refresh_blocking(&self) -> Result<(), BoardError> {
        self.call_blocking(&WatchdogRefresh {}, Kind::Write, self.timeout(), None)
            .map(|(r, _)| r)
    }

    /// Whether the firmware's main loop refreshes the MCU watchdog by itself; returns whether
    /// the setting changed.
    pub async fn watchdog_auto_refresh(&self, enabled: bool) -> Result<bool, BoardError> {
        self.call(
            &WatchdogAutoRefresh { value: enabled },
            Kind::Write,
            self.timeout(),
        )
        .await
    }
}
