//! `check`: a bring-up report of a connected board for a lab (and a bug report): who it is,
//! which command table speaks to it, what it measures, how fast it answers. It reads only;
//! with [`CheckOptions::actuate`] it drives one channel with HV for a moment and turns
//! everything off again, whatever happened in between.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::dropbot::DropBot;
use super::error::BoardError;

mod report;

/// Measured HV below this with HV off means the 12 V supply is missing (dropbot.py `proxy.py`
/// raises `NoPower` under 5 V).
pub const NO_POWER_BELOW_V: f32 = 5.0;

/// What `check` does beyond reading.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Round trips timed per call.
    pub samples: usize,
    /// Drive this channel with HV (the board's current voltage setting), then all off.
    pub actuate: Option<u16>,
    /// How long the channel stays on.
    pub actuate_for: Duration,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            samples: 20,
            actuate: None,
            actuate_for: Duration::from_millis(500),
        }
    }
}

/// A reading, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Item<T> {
    /// The value read.
    Ok(T),
    /// The board's or the link's error, as text.
    Error(String),
}

impl<T> Item<T> {
    fn of(result: Result<T, BoardError>) -> Self {
        match result {
            Ok(v) => Item::Ok(v),
            Err(e) => Item::Error(e.to_string()),
        }
    }

    /// The value, if it was read.
    pub fn ok(&self) -> Option<&T> {
        match self {
            Item::Ok(v) => Some(v),
            Item::Error(_) => None,
        }
    }
}

/// Round-trip times of one call, microseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timing {
    /// The call, e.g. `microseconds`.
    pub call: &'static str,
    /// Round trips made (failed ones are not timed).
    pub samples: usize,
    /// Median.
    pub p50_us: u64,
    /// Slowest.
    pub max_us: u64,
    /// Failures, if any (the first one's text).
    pub failed: Option<String>,
}

/// What happened when one channel was actuated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Actuation {
    /// The channel.
    pub channel: u16,
    /// Measured RMS output while it was on, volts.
    pub high_voltage_v: Item<f32>,
    /// Capacitance of the channel while it was on, farads.
    pub capacitance_f: Item<f32>,
    /// The first error of the sequence, if any.
    pub error: Option<String>,
    /// HV off and no channel actuated afterwards, as read back from the board.
    pub all_off_after: Item<bool>,
}

/// Everything `check` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    /// This program and its version.
    pub program: String,
    /// The port the board was opened on.
    pub port: Option<String>,
    /// The handshake answer, e.g. `dropbot::1.73.6`.
    pub identity: String,
    /// The command table chosen for it.
    pub table: String,
    /// Where that table's codes come from.
    pub table_source: String,
    /// `software_version`, `hardware_version`, and BaseNode's build properties.
    pub software_version: String,
    /// Board revision.
    pub hardware_version: String,
    /// The board's UUID.
    pub uuid: String,
    /// base-node-rpc version, package, display name, manufacturer, URL.
    pub build: Item<Pairs<String>>,
    /// Channels found by the switching-board scan.
    pub channel_count: u16,
    /// Configuration highlights (EEPROM).
    pub config: Pairs<String>,
    /// Whether HV was on when the check began (then `high_voltage_v` is the output).
    pub hv_on_at_start: bool,
    /// `high_voltage()`: with HV off the supply passes through.
    pub high_voltage_v: Item<f32>,
    /// "yes", or "no power" when HV is off and the reading is under 5 V.
    pub power: String,
    /// Chip interlock (pin 22 low = inserted).
    pub chip_inserted: Item<bool>,
    /// MCU temperature, °C.
    pub temperature_c: Item<f32>,
    /// RMS supply current, A.
    pub input_current_a: Item<f32>,
    /// RMS output current, A.
    pub output_current_a: Item<f32>,
    /// One capacitance reading of the actuated channels (none: the front end's offset), F.
    pub capacitance_f: Item<f32>,
    /// Channels the board will not actuate.
    pub disabled_channels: Item<Vec<u16>>,
    /// Channels actuated now.
    pub actuated_channels: Item<Vec<u16>>,
    /// The board's wall clock, s (since boot unless a host set it).
    pub wall_time_s: Item<f64>,
    /// Round-trip times.
    pub timings: Vec<Timing>,
    /// With `--actuate`.
    pub actuation: Option<Actuation>,
    /// Link counters at the end (timeouts, CRC errors, ...).
    pub link: Pairs<u64>,
}

/// Named values in a fixed order (a JSON object in that order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pairs<T>(pub Vec<(String, T)>);

impl<T: Serialize> Serialize for Pairs<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Run the check on a connected board.
pub async fn check(bot: &DropBot, options: &CheckOptions) -> CheckReport {
    let info = bot.info();
    let state = bot.state().await.ok();
    let hv_on_at_start = state
        .as_ref()
        .and_then(|s| s.hv_output_enabled)
        .unwrap_or(info.state_at_connect.hv_output_enabled.unwrap_or(false));
    let high_voltage_v = Item::of(bot.high_voltage().await);
    let power = match high_voltage_v.ok() {
        Some(_) if hv_on_at_start => "unknown (HV is on: the reading is the output)".to_owned(),
        Some(v) if *v < NO_POWER_BELOW_V => {
            format!("no power ({v:.1} V < {NO_POWER_BELOW_V} V with HV off: is the 12 V supply connected?)")
        }
        Some(_) => "yes".to_owned(),
        None => "unknown".to_owned(),
    };
    let config = &info.config;
    let config_items = vec![
        ("max_voltage", config.max_voltage.map(|v| format!("{v} V"))),
        (
            "min_frequency",
            config.min_frequency.map(|v| format!("{v} Hz")),
        ),
        (
            "max_frequency",
            config.max_frequency.map(|v| format!("{v} Hz")),
        ),
        (
            "capacitance_n_samples",
            config.capacitance_n_samples.map(|v| v.to_string()),
        ),
        ("C16", config.c16.map(|v| format!("{v:e} F"))),
        ("i2c_address", config.i2c_address.map(|v| v.to_string())),
        (
            "switching_board_i2c_address",
            config.switching_board_i2c_address.map(|v| v.to_string()),
        ),
        ("id", config.id.clone().map(|v| format!("{v:?}"))),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k.to_owned(), v?)))
    .collect::<Vec<_>>();
    let mut report = CheckReport {
        program: format!("dropbot-plugin {}", env!("CARGO_PKG_VERSION")),
        port: info.port.clone(),
        identity: info.identity.clone(),
        table: bot.table().description().to_owned(),
        table_source: bot.table().source().to_owned(),
        software_version: info.software_version.clone(),
        hardware_version: info.hardware_version.clone(),
        uuid: info.uuid.clone(),
        build: Item::of(bot.build_properties().await.map(Pairs)),
        channel_count: info.channel_count,
        config: Pairs(config_items),
        hv_on_at_start,
        high_voltage_v,
        power,
        chip_inserted: Item::of(bot.chip_inserted().await),
        temperature_c: Item::of(bot.measure_temperature().await),
        input_current_a: Item::of(bot.input_current_rms().await),
        output_current_a: Item::of(bot.output_current_rms().await),
        capacitance_f: Item::of(bot.capacitance(0).await),
        disabled_channels: Item::of(bot.disabled_channels().await.map(into_vec)),
        actuated_channels: Item::of(bot.channels().await.map(into_vec)),
        wall_time_s: Item::of(bot.wall_time().await),
        timings: Vec::new(),
        actuation: None,
        link: Pairs::default(),
    };
    report.timings = vec![
        time_calls("microseconds", options.samples, || async {
            bot.sync_time().await.map(drop)
        })
        .await,
        time_calls("serialize_state", options.samples, || async {
            bot.state().await.map(drop)
        })
        .await,
    ];
    if let Some(channel) = options.actuate {
        report.actuation = Some(actuate(bot, channel, options.actuate_for).await);
    }
    let s = bot.stats();
    report.link = Pairs(
        [
            ("requests", s.requests),
            ("replies", s.replies),
            ("timeouts", s.timeouts),
            ("stale_replies", s.stale_replies),
            ("unexpected", s.unexpected),
            ("events", s.events),
            ("bad_events", s.bad_events),
            ("crc_errors", s.crc_errors),
            ("discarded_bytes", s.discarded_bytes),
            ("bad_headers", s.bad_headers),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    );
    report
}

fn into_vec(set: BTreeSet<u16>) -> Vec<u16> {
    set.into_iter().collect()
}

/// Time `samples` calls of `call`, one after the other.
async fn time_calls<F, Fut>(name: &'static str, samples: usize, mut call: F) -> Timing
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), BoardError>>,
{
    let mut times = Vec::with_capacity(samples);
    let mut failed = None;
    for _ in 0..samples {
        let start = Instant::now();
        match call().await {
            Ok(()) => times.push(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)),
            Err(e) => {
                failed.get_or_insert(e.to_string());
            }
        }
    }
    times.sort_unstable();
    Timing {
        call: name,
        samples: times.len(),
        p50_us: times.get(times.len() / 2).copied().unwrap_or(0),
        max_us: times.last().copied().unwrap_or(0),
        failed,
    }
}

/// Drive `channel` alone with HV for `hold`, read what it does, then HV and channels off.
async fn actuate(bot: &DropBot, channel: u16, hold: Duration) -> Actuation {
    let mut run = Actuation {
        channel,
        high_voltage_v: Item::Error("not reached".into()),
        capacitance_f: Item::Error("not reached".into()),
        error: None,
        all_off_after: Item::Error("not read".into()),
    };
    let on = async {
        if bot.disabled_channels().await?.contains(&channel) {
            return Err(BoardError::Refused {
                command: "set_state_of_channels",
                detail: format!("channel {channel} is disabled: the board would not drive it"),
            });
        }
        bot.set_channels(&BTreeSet::from([channel])).await?;
        bot.set_hv_output_enabled(true).await?;
        tokio::time::sleep(hold).await;
        Ok::<(), BoardError>(())
    }
    .await;
    match on {
        Ok(()) => {
            run.high_voltage_v = Item::of(bot.high_voltage().await);
            run.capacitance_f = Item::of(bot.capacitance(0).await);
        }
        Err(e) => run.error = Some(e.to_string()),
    }
    // Everything off, whatever happened above.
    if let Err(e) = bot.safe_state().await {
        run.error.get_or_insert(e.to_string());
    }
    run.all_off_after = Item::of(
        async {
            let hv = bot.state().await?.hv_output_enabled.unwrap_or(false);
            Ok(!hv && bot.channels().await?.is_empty())
        }
        .await,
    );
    run
}
