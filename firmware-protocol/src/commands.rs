//! The typed command set: one struct per remote call (its arguments in declaration order and
//! its reply type), the [`Request`] enum a board decodes, and the stable [`CommandName`]s that
//! command tables map to firmware-specific codes.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::rpc::{CallBuilder, CallReader, RpcError, WireValue};
use crate::table::{CommandTable, TableError};

/// A remote call: its name, arguments and reply type.
pub trait Command: Sized {
    /// The stable name the command table maps to a code.
    const NAME: CommandName;
    /// What the board returns.
    type Reply: WireValue;
    /// Append the arguments in declaration order.
    fn write_args(&self, call: &mut CallBuilder);
    /// Read the arguments in declaration order.
    fn read_args(reader: &mut CallReader<'_>) -> Result<Self, RpcError>;

    /// The request payload for this call under `table`.
    fn encode(&self, table: &CommandTable) -> Result<Vec<u8>, TableError> {
        let mut call = CallBuilder::new(table.code(Self::NAME)?);
        self.write_args(&mut call);
        Ok(call.finish())
    }

    /// Decode this call's reply payload.
    fn decode_reply(bytes: &[u8]) -> Result<Self::Reply, RpcError> {
        Self::Reply::decode_reply(bytes)
    }
}

/// A request payload that a board cannot decode.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The code is not in the board's table (the firmware answers with an empty reply).
    #[error("unknown command code {0}")]
    UnknownCode(u16),
    /// The arguments do not decode.
    #[error("bad arguments for `{command}`: {source}")]
    BadArguments {
        command: CommandName,
        #[source]
        source: RpcError,
    },
    /// Too short to hold a command code.
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

/// A command name that is not part of the command set.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("unknown command name `{0}`")]
pub struct UnknownCommandName(pub String);

macro_rules! commands {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident = $wire:literal { $($field:ident : $fty:ty),* } -> $reply:ty;
    )*) => {
        $(
            $(#[doc = $doc])*
            #[doc = concat!("\n\nWire name `", $wire, "`; replies `", stringify!($reply), "`.")]
            #[derive(Debug, Clone, PartialEq)]
            pub struct $name { $(#[allow(missing_docs)] pub $field: $fty),* }

            impl Command for $name {
                const NAME: CommandName = CommandName::$name;
                type Reply = $reply;
                fn write_args(&self, _call: &mut CallBuilder) {
                    $(self.$field.write_arg(_call);)*
                }
                fn read_args(_reader: &mut CallReader<'_>) -> Result<Self, RpcError> {
                    Ok(Self { $($field: <$fty>::read_arg(_reader, stringify!($field))?),* })
                }
            }
        )*

        /// The stable name of every command, independent of any firmware's numbering.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum CommandName { $($(#[doc = $doc])* $name),* }

        impl CommandName {
            /// Every command, grouped by firmware class in declaration order.
            pub const ALL: &'static [CommandName] = &[$(CommandName::$name),*];

            /// The name used in command tables, e.g. `set_state_of_channels`.
            pub fn as_str(self) -> &'static str {
                match self { $(CommandName::$name => $wire),* }
            }
        }

        impl FromStr for CommandName {
            type Err = UnknownCommandName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok(CommandName::$name),)*
                    _ => Err(UnknownCommandName(s.to_owned())),
                }
            }
        }

        /// Any request, as a board decodes it.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Request { $($(#[doc = $doc])* $name($name)),* }

        impl Request {
            /// Decode a request payload under `table`.
            pub fn decode(payload: &[u8], table: &CommandTable) -> Result<Self, RequestError> {
                let (code, mut reader) = CallReader::new(payload)?;
                let name = table.name(code).ok_or(RequestError::UnknownCode(code))?;
                let bad = |source| RequestError::BadArguments { command: name, source };
                let request = match name {
                    $(CommandName::$name => {
                        Request::$name($name::read_args(&mut reader).map_err(bad)?)
                    })*
                };
                reader.finish().map_err(bad)?;
                Ok(request)
            }

            /// The request payload under `table`.
            pub fn encode(&self, table: &CommandTable) -> Result<Vec<u8>, TableError> {
                match self { $(Request::$name(c) => c.encode(table)),* }
            }

            /// Check that `reply` decodes as this command's reply type.
            pub fn check_reply(&self, reply: &[u8]) -> Result<(), RpcError> {
                match self { $(Request::$name(_) => $name::decode_reply(reply).map(drop)),* }
            }

            /// This request's command name.
            pub fn name(&self) -> CommandName {
                match self { $(Request::$name(_) => CommandName::$name),* }
            }
        }

        $(
            impl From<$name> for Request {
                fn from(c: $name) -> Self { Request::$name(c) }
            }
        )*
    };
}

commands! {
    // BaseNode (base-node-rpc `BaseNode.h`): identity strings, time, pins, echo.
    /// Version of the base-node-rpc library the firmware was built with.
    BaseNodeSoftwareVersion = "base_node_software_version" {} -> String;
    /// Package name, `dropbot`.
    PackageName = "package_name" {} -> String;
    /// Display name, `DropBot`.
    DisplayName = "display_name" {} -> String;
    /// Manufacturer, e.g. `Sci-Bots Inc.`.
    Manufacturer = "manufacturer" {} -> String;
    /// Firmware version text, e.g. `1.73.6`.
    SoftwareVersion = "software_version" {} -> String;
    /// Project URL.
    Url = "url" {} -> String;
    /// The board's free-running 32-bit microsecond counter (wraps every ~71.6 minutes).
    Microseconds = "microseconds" {} -> u32;
    /// The board's free-running 32-bit millisecond counter.
    Milliseconds = "milliseconds" {} -> u32;
    /// Level of a digital pin (0 or 1); pin 22 is the chip interlock, low when a chip is in.
    DigitalRead = "digital_read" { pin: u8 } -> u8;
    /// The array, returned as sent.
    EchoArray = "echo_array" { array: Vec<u32> } -> Vec<u32>;
    /// The bytes, returned as sent.
    StrEcho = "str_echo" { msg: Vec<u8> } -> Vec<u8>;

    // BaseNodeConfig (`BaseNodeConfig.h`).
    /// Save the configuration to EEPROM.
    SaveConfig = "save_config" {} -> ();
    /// The board configuration as a protobuf `Config`.
    SerializeConfig = "serialize_config" {} -> Vec<u8>;
    /// Merge a protobuf `Config` into the configuration; nonzero if it decoded.
    UpdateConfig = "update_config" { serialized: Vec<u8> } -> u8;

    // BaseNodeState (`BaseNodeState.h`).
    /// The board state as a protobuf `State`.
    SerializeState = "serialize_state" {} -> Vec<u8>;
    /// Merge a protobuf `State` into the board state; nonzero if it decoded (a field whose
    /// change the firmware refuses is skipped without saying so).
    UpdateState = "update_state" { serialized: Vec<u8> } -> u8;

    // dropbot::Node (dropbot.py `src/Node.h`).
    /// MCU temperature in degrees Celsius.
    MeasureTemperature = "measure_temperature" {} -> f32;
    /// Measured RMS output voltage in volts (the supply voltage passes through while HV is off).
    HighVoltage = "high_voltage" {} -> f32;
    /// RMS output current in amperes.
    OutputCurrentRms = "output_current_rms" {} -> f32;
    /// Peak output current in amperes.
    OutputCurrent = "output_current" {} -> f32;
    /// RMS input supply current in amperes.
    InputCurrentRms = "input_current_rms" {} -> f32;
    /// Peak input supply current in amperes.
    InputCurrent = "input_current" {} -> f32;
    /// Number of electrode channels found by the last switching-board scan (a multiple of 8).
    NumberOfChannels = "number_of_channels" {} -> u16;
    /// Hardware version text, e.g. `3.6`.
    HardwareVersion = "hardware_version" {} -> String;
    /// The board's 16-byte UUID.
    Uuid = "_uuid" {} -> Vec<u8>;
    /// Find shorted channels (each tested for `delay_ms`); the disabled mask becomes exactly
    /// the shorted channels.
    DetectShorts = "detect_shorts" { delay_ms: u8 } -> Vec<u8>;
    /// Lowest RMS voltage the waveform can produce, in volts.
    MinWaveformVoltage = "min_waveform_voltage" {} -> f32;
    /// Scan the I2C bus for HV switching boards; returns the new channel count.
    InitializeSwitchingBoards = "initialize_switching_boards" {} -> u16;
    /// Capacitance of the actuated electrodes in farads, averaged over `n_samples` (0: config default).
    Capacitance = "capacitance" { n_samples: u16 } -> f32;
    /// Whether the main loop refreshes the MCU watchdog; true if the setting changed.
    WatchdogAutoRefresh = "watchdog_auto_refresh" { value: bool } -> bool;
    /// Enable the MCU watchdog (`prescaler` at most 15; `timeout` in watchdog clock ticks) and
    /// its automatic refresh; 0 if set, -1 if `prescaler` is over 15.
    WatchdogEnable = "watchdog_enable" { prescaler: u8, timeout: u32 } -> i8;
    /// Disable the MCU watchdog and its automatic refresh.
    WatchdogDisable = "watchdog_disable" {} -> ();
    /// Refresh the MCU watchdog.
    WatchdogRefresh = "watchdog_refresh" {} -> ();
    /// Restart the firmware (it never replies).
    Reboot = "reboot" {} -> ();
    /// Connect on-board test capacitor `index` (0: 1 pF, 1: 10 pF, 2: 100 pF) to the HV
    /// output, after disconnecting all of them; -1 disconnects all. Returns the nominal
    /// capacitance now connected, farads (dropbot.py `Node.h`, since 1.73.0).
    SelectOnBoardTestCapacitor = "select_on_board_test_capacitor" { index: i8 } -> f32;
    /// Capacitance of each listed channel actuated alone, in farads.
    ChannelCapacitances = "channel_capacitances" { channels: Vec<u8> } -> Vec<f32>;
    /// Actuated channels, bit-packed (channel n is bit n%8 of byte n/8).
    StateOfChannels = "state_of_channels" {} -> Vec<u8>;
    /// Set disabled channels, bit-packed, channel_count/8 bytes.
    SetDisabledChannelsMask = "set_disabled_channels_mask" { disabled_channels_mask: Vec<u8> } -> ();
    /// Disabled channels, bit-packed.
    DisabledChannelsMask = "disabled_channels_mask" {} -> Vec<u8>;
    /// Set actuated channels, bit-packed, exactly channel_count/8 bytes; false if refused.
    SetStateOfChannels = "set_state_of_channels" { channel_states: Vec<u8> } -> bool;
    /// Set the board's wall clock to `wall_time` (Unix seconds); returns its millisecond counter.
    SyncTime = "sync_time" { wall_time: f64 } -> u32;
    /// The board's wall clock, Unix seconds (seconds since boot until `sync_time`).
    WallTime = "wall_time" {} -> f64;
    /// Turn every channel off.
    TurnOffAllChannels = "turn_off_all_channels" {} -> ();
    /// HV off and every channel disabled (the disabled mask becomes all ones).
    Halt = "halt" {} -> ();
}

impl fmt::Display for CommandName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in CommandName::ALL {
            assert_eq!(name.as_str().parse::<CommandName>().unwrap(), *name);
        }
        assert!("nope".parse::<CommandName>().is_err());
    }

    #[test]
    fn request_round_trip_under_builtin_table() {
        let table = CommandTable::simulator();
        let request: Request = ChannelCapacitances {
            channels: vec![1, 2, 119],
        }
        .into();
        let bytes = request.encode(&table).unwrap();
        assert_eq!(Request::decode(&bytes, &table).unwrap(), request);
    }

    #[test]
    fn unknown_code_and_bad_args() {
        let table = CommandTable::simulator();
        assert_eq!(
            Request::decode(&[0xFF, 0xFF], &table),
            Err(RequestError::UnknownCode(0xFFFF))
        );
        let code = table.code(CommandName::Capacitance).unwrap();
        let mut short = code.to_le_bytes().to_vec();
        short.push(1);
        assert!(matches!(
            Request::decode(&short, &table),
            Err(RequestError::BadArguments { .. })
        ));
        let mut long = code.to_le_bytes().to_vec();
        long.extend_from_slice(&[1, 0, 9]);
        assert!(matches!(
            Request::decode(&long, &table),
            Err(RequestError::BadArguments { .. })
        ));
    }
}
