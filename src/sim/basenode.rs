//! The firmware's identity strings, clocks, pins and echo calls: sci-bots/base-node-rpc
//! `BaseNode.h` (strings from the build's `PROPERTIES`, `micros`, `millis`, `digitalRead`,
//! `echo_array`, `str_echo`) and dropbot.py `src/Time.cpp` (`sync_time`, `wall_time`).

use super::firmware::Firmware;

/// The strings a firmware build was given (`BASE_NODE__*` build flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildStrings {
    /// `base_node_software_version`: the base-node-rpc version installed at build time.
    pub base_node_software_version: &'static str,
    /// `package_name`.
    pub package_name: &'static str,
    /// `display_name`.
    pub display_name: &'static str,
    /// `manufacturer`.
    pub manufacturer: &'static str,
    /// `url`.
    pub url: &'static str,
}

/// sci-bots/dropbot.py `pavement.py` `PROPERTIES`. The base-node-rpc version is that of the
/// last release (0.51.8, published the day 1.73.6 was tagged); the build takes whatever is
/// installed, so this is an inference.
pub const SCI_BOTS: BuildStrings = BuildStrings {
    base_node_software_version: "0.51.8",
    package_name: "dropbot",
    display_name: "DropBot",
    manufacturer: "Sci-Bots Inc.",
    url: "http://gitlab.com/sci-bots/dropbot.py.git",
};

/// Blue-Ocean-Technologies-Inc/dropbot.py `file_handler.py` `get_properties` (display name =
/// package name; the base-node-rpc version is again an inference).
pub const BLUE_OCEAN_FORK: BuildStrings = BuildStrings {
    base_node_software_version: "0.51.8",
    package_name: "dropbot",
    display_name: "dropbot",
    manufacturer: "Sci-bots Inc.",
    url: "https://github.com/sci-bots/dropbot",
};

/// The build strings of a firmware version: the fork's own releases are 1.73.7 and later in
/// the 1.73 line and 1.74.1 and later in the 1.74 line; everything else is sci-bots'.
pub fn build_strings(version: &str) -> BuildStrings {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (
        parts.next().flatten(),
        parts.next().flatten(),
        parts.next().flatten(),
    ) {
        (Some(1), Some(73), Some(p)) if p >= 7 => BLUE_OCEAN_FORK,
        (Some(1), Some(74), Some(p)) if p >= 1 => BLUE_OCEAN_FORK,
        _ => SCI_BOTS,
    }
}

/// The interlock input (`voltage_source::OE_PIN`): low while a chip is in.
const OE_PIN: u8 = 22;
/// The boost converter's shutdown pin (`SHDN_PIN`): high while HV is off.
const SHDN_PIN: u8 = 10;
/// The output selector (`HV_OUTPUT_SELECT_PIN`): low when HV is selected.
const HV_OUTPUT_SELECT_PIN: u8 = 8;

impl Firmware {
    /// The strings of this firmware's build.
    pub(super) fn build_strings(&self) -> BuildStrings {
        build_strings(&self.version())
    }

    /// Whether this is a build of the Blue-Ocean fork (state field 13, config field 62, the
    /// `capacitance_saturated` event).
    pub(super) fn is_fork(&self) -> bool {
        self.build_strings() == BLUE_OCEAN_FORK
    }

    /// `digitalRead(pin)` for the pins the firmware drives or reads; the test-capacitor pins
    /// 0-2 are high (`Node::begin`) unless `select_on_board_test_capacitor` pulled one low;
    /// any other pin reads low.
    pub(super) fn digital_read(&self, pin: u8) -> u8 {
        let hv = self.physics.hv();
        let high = match pin {
            OE_PIN => !hv.chip(),
            SHDN_PIN => !hv.enabled(),
            HV_OUTPUT_SELECT_PIN => !hv.selected(),
            0..=2 => self.physics.test_capacitor() != Some(usize::from(pin)),
            _ => false,
        };
        u8::from(high)
    }

    /// `time::sync_time(wall_time)`: the board's `millis()` it was synchronised at.
    pub(super) fn sync_time(&mut self, wall_time: f64) -> u32 {
        let ms = self.board_ms(self.now());
        self.wall = (wall_time, ms);
        ms
    }

    /// Microseconds since boot as `micros()` counts them (wraps at 2^32).
    pub(super) fn micros(&self) -> u32 {
        self.board_us(self.now())
    }

    /// Milliseconds since boot as `millis()` counts them (wraps at 2^32).
    pub(super) fn millis(&self) -> u32 {
        self.board_ms(self.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fork_is_told_apart_by_version() {
        assert_eq!(build_strings("1.73.6"), SCI_BOTS);
        assert_eq!(build_strings("1.74.0"), SCI_BOTS);
        assert_eq!(build_strings("1.0.0-sim"), SCI_BOTS);
        assert_eq!(build_strings("1.73.25"), BLUE_OCEAN_FORK);
        assert_eq!(build_strings("1.74.3+4.g856c7fa"), BLUE_OCEAN_FORK);
    }
}
