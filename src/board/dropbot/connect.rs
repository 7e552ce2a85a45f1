//! What a host does at connection besides identifying the board, as the vendor's driver does it
//! (sci-bots/dropbot.py `dropbot/proxy_py2.py` `ProxyMixin.__init__`, `dropbot/monitor.py`):
//! rescan the switching boards (the firmware scans them only at boot), read the build's strings,
//! check for power (`high_voltage` under 5 V: "no power"), read the chip interlock pin and set
//! the board's wall clock. Each is one small function; a failure of an optional read is
//! recorded in [`BoardInfo::connect_warnings`], only a broken link is fatal.

use std::time::{SystemTime, UNIX_EPOCH};

use firmware_protocol::commands::{
    BaseNodeSoftwareVersion, DigitalRead, DisplayName, HighVoltage, InitializeSwitchingBoards,
    Manufacturer, NumberOfChannels, PackageName, SyncTime, Url,
};
use firmware_protocol::{Command, Config};

use super::{BoardError, Caller, Kind};

/// Under this measured voltage the board has no 12 V supply (the driver's `NoPower` check).
pub const NO_POWER_BELOW_V: f32 = 5.0;
/// The chip interlock input, low while a chip is in (`monitor.py` `OUTPUT_ENABLE_PIN`).
const OUTPUT_ENABLE_PIN: u8 = 22;

/// The strings a firmware build carries (base-node-rpc `BaseNode.h`); `None` where the board
/// did not answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildInfo {
    /// `base_node_software_version()`.
    pub base_node_software_version: Option<String>,
    /// `package_name()`, `dropbot`.
    pub package_name: Option<String>,
    /// `display_name()`.
    pub display_name: Option<String>,
    /// `manufacturer()`.
    pub manufacturer: Option<String>,
    /// `url()`.
    pub url: Option<String>,
}

/// Where connect-time notes go.
pub(super) type Notes = Vec<String>;

impl Caller {
    /// The channel count: `initialize_switching_boards()` as the driver calls it when the
    /// board has an I2C address, otherwise (or if that fails) `number_of_channels()`.
    pub(super) async fn channel_count(
        &self,
        config: &Config,
        notes: &mut Notes,
    ) -> Result<u16, BoardError> {
        let t = self.link.options().request_timeout;
        if config.i2c_address() == 0 {
            notes.push(
                "the board's I2C address is not set: switching boards not rescanned (set \
                 i2c_address in its config)"
                    .into(),
            );
        } else {
            let scan = self
                .call(&InitializeSwitchingBoards {}, Kind::Write, t * 2)
                .await;
            if let Some(count) = optional(scan, InitializeSwitchingBoards::NAME.as_str(), notes)? {
                return Ok(count);
            }
        }
        self.call(&NumberOfChannels {}, Kind::Read, t).await
    }

    /// The build's strings, each optional.
    pub(super) async fn build_info(&self, notes: &mut Notes) -> Result<BuildInfo, BoardError> {
        Ok(BuildInfo {
            base_node_software_version: self.string(&BaseNodeSoftwareVersion {}, notes).await?,
            package_name: self.string(&PackageName {}, notes).await?,
            display_name: self.string(&DisplayName {}, notes).await?,
            manufacturer: self.string(&Manufacturer {}, notes).await?,
            url: self.string(&Url {}, notes).await?,
        })
    }

    /// `high_voltage()`: with HV off it reads about half the supply; `None` if not read.
    pub(super) async fn supply_voltage(
        &self,
        notes: &mut Notes,
    ) -> Result<Option<f32>, BoardError> {
        let t = self.link.options().request_timeout;
        let volts = self.call(&HighVoltage {}, Kind::Read, t).await;
        optional(volts, HighVoltage::NAME.as_str(), notes)
    }

    /// Whether a chip is in: the interlock pin reads low.
    pub(super) async fn chip_inserted(
        &self,
        notes: &mut Notes,
    ) -> Result<Option<bool>, BoardError> {
        let t = self.link.options().request_timeout;
        let pin = self
            .call(
                &DigitalRead {
                    pin: OUTPUT_ENABLE_PIN,
                },
                Kind::Read,
                t,
            )
            .await;
        Ok(optional(pin, DigitalRead::NAME.as_str(), notes)?.map(|level| level == 0))
    }

    /// `sync_time(now)`: the board's wall clock (used in its `halted` events) set to this
    /// host's; the board's millisecond counter at that moment.
    pub(super) async fn set_clock(&self, notes: &mut Notes) -> Result<Option<u32>, BoardError> {
        let t = self.link.options().request_timeout;
        let wall_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let synced = self.call(&SyncTime { wall_time }, Kind::Write, t).await;
        optional(synced, SyncTime::NAME.as_str(), notes)
    }

    async fn string<C: Command<Reply = String>>(
        &self,
        command: &C,
        notes: &mut Notes,
    ) -> Result<Option<String>, BoardError> {
        let t = self.link.options().request_timeout;
        let text = self.call(command, Kind::Read, t).await;
        optional(text, C::NAME.as_str(), notes)
    }
}

/// An optional read: its value, or `None` with a note; only a broken link is an error.
fn optional<T>(
    result: Result<T, BoardError>,
    what: &str,
    notes: &mut Notes,
) -> Result<Option<T>, BoardError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_gone() => Err(e),
        Err(e) => {
            tracing::debug!(command = what, "optional read at connection failed: {e}");
            notes.push(format!("{what}: {e}"));
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::LinkError;

    #[test]
    fn only_a_broken_link_is_fatal() {
        let mut notes = Notes::new();
        let refused: Result<u8, _> = Err(BoardError::Refused {
            command: "x",
            detail: "no".into(),
        });
        assert_eq!(optional(refused, "x", &mut notes).unwrap(), None);
        assert_eq!(notes.len(), 1);
        let gone: Result<u8, _> = Err(LinkError::Closed.into());
        assert!(optional(gone, "y", &mut notes).is_err());
        assert_eq!(optional(Ok(3u8), "z", &mut notes).unwrap(), Some(3));
    }
}
