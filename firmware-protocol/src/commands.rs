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
            /// Every command, in the order of the simulator's table.
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
    /// Firmware version text, e.g. `1.0.0-sim`.
    SoftwareVersion = "software_version" {} -> String;
    /// Hardware version text, e.g. `3.1`.
    HardwareVersion = "hardware_version" {} -> String;
    /// The board's 16-byte UUID.
    Uuid = "uuid" {} -> Vec<u8>;
    /// The board's free-running 32-bit microsecond counter (wraps every ~71.6 minutes).
    Microseconds = "microseconds" {} -> u32;
    /// Number of electrode channels (a multiple of 40 on a DropBot).
    NumberOfChannels = "number_of_channels" {} -> u16;
    /// Actuated channels, bit-packed (channel n is bit n%8 of byte n/8).
    StateOfChannels = "state_of_channels" {} -> Vec<u8>;
    /// Set actuated channels, bit-packed, exactly channel_count/8 bytes; false if refused.
    SetStateOfChannels = "set_state_of_channels" { states: Vec<u8> } -> bool;
    /// Disabled channels, bit-packed.
    DisabledChannelsMask = "disabled_channels_mask" {} -> Vec<u8>;
    /// Set disabled channels, bit-packed; false if refused.
    SetDisabledChannelsMask = "set_disabled_channels_mask" { mask: Vec<u8> } -> bool;
    /// Turn every channel off.
    TurnOffAllChannels = "turn_off_all_channels" {} -> ();
    /// Measured RMS output voltage in volts.
    MeasureVoltage = "measure_voltage" {} -> f32;
    /// Lowest RMS voltage the waveform can produce, in volts.
    MinWaveformVoltage = "min_waveform_voltage" {} -> f32;
    /// Capacitance of the actuated electrodes in farads, averaged over `n_samples` (0: config default).
    Capacitance = "capacitance" { n_samples: u16 } -> f32;
    /// Capacitance of each listed channel actuated alone, in farads.
    ChannelCapacitances = "channel_capacitances" { channels: Vec<u16>, n_samples: u16 } -> Vec<f32>;
    /// Find shorted channels (each tested for `delay_ms`); adds them to the disabled mask.
    DetectShorts = "detect_shorts" { delay_ms: u8 } -> Vec<u8>;
    /// HV off and all channels disabled.
    Halt = "halt" {} -> ();
    /// RMS output current in amperes.
    OutputCurrent = "output_current" {} -> f32;
    /// Input supply current in amperes.
    InputCurrent = "input_current" {} -> f32;
    /// MCU temperature in degrees Celsius.
    Temperature = "temperature" {} -> f32;
    /// Enable the MCU hang watchdog.
    WatchdogEnable = "watchdog_enable" {} -> ();
    /// Disable the MCU hang watchdog.
    WatchdogDisable = "watchdog_disable" {} -> ();
    /// Refresh the MCU hang watchdog.
    WatchdogReset = "watchdog_reset" {} -> ();
    /// Optional host-liveness watchdog: HV and channels off when no packet has arrived for
    /// `timeout_ms` (0 disables); true if set. A firmware without it answers an empty reply,
    /// which decodes as [`RpcError::ReplyLength`] with `got: 0`.
    SetHostWatchdog = "set_host_watchdog" { timeout_ms: u32 } -> bool;
    /// Restart the firmware (no reply is guaranteed).
    Reboot = "reboot" {} -> ();
    /// The board state as a protobuf `State`.
    SerializeState = "serialize_state" {} -> Vec<u8>;
    /// Merge a protobuf `State` into the board state; false if a value was refused.
    UpdateState = "update_state" { state: Vec<u8> } -> bool;
    /// The board configuration as a protobuf `Config`.
    SerializeConfig = "serialize_config" {} -> Vec<u8>;
    /// Merge a protobuf `Config` into the configuration; false if a value was refused.
    UpdateConfig = "update_config" { config: Vec<u8> } -> bool;
    /// Save the configuration to EEPROM.
    SaveConfig = "save_config" {} -> ();
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
            n_samples: 50,
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
