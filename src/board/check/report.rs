//! The check report as plain text (for a terminal and a bug report) and as JSON.

use std::fmt::{self, Display, Write};

use super::{CheckReport, Item};

impl<T: Display> Display for Item<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Ok(v) => v.fmt(f),
            Item::Error(e) => write!(f, "error: {e}"),
        }
    }
}

fn list(channels: &Item<Vec<u16>>) -> String {
    match channels {
        Item::Ok(v) if v.is_empty() => "none".to_owned(),
        Item::Ok(v) => {
            let text: Vec<String> = v.iter().map(u16::to_string).collect();
            format!("{} ({})", text.join(", "), v.len())
        }
        Item::Error(e) => format!("error: {e}"),
    }
}

fn scaled(value: &Item<f32>, scale: f32, unit: &str) -> String {
    match value {
        Item::Ok(v) => format!("{:.3} {unit}", v * scale),
        Item::Error(e) => format!("error: {e}"),
    }
}

impl CheckReport {
    /// The report as pretty-printed JSON, fields in the order of the text report.
    pub fn to_json(&self) -> String {
        // Plain data: serialising it cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The report as plain text, one `name: value` per line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: String| {
            let _ = writeln!(out, "{k:<28} {v}");
        };
        line("program", self.program.clone());
        line("port", self.port.clone().unwrap_or_else(|| "-".into()));
        line("identity", self.identity.clone());
        line("command table", self.table.clone());
        if !self.table_source.is_empty() {
            line("table source", self.table_source.clone());
        }
        line("software version", self.software_version.clone());
        line("hardware version", self.hardware_version.clone());
        line("uuid", self.uuid.clone());
        match &self.build {
            Item::Ok(props) => {
                for (k, v) in &props.0 {
                    line(k, if v.is_empty() { "-".into() } else { v.clone() });
                }
            }
            Item::Error(e) => line("build properties", format!("error: {e}")),
        }
        line("channels", self.channel_count.to_string());
        for (k, v) in &self.config.0 {
            line(&format!("config {k}"), v.clone());
        }
        line(
            "HV at start",
            if self.hv_on_at_start { "on" } else { "off" }.into(),
        );
        line("measured HV", scaled(&self.high_voltage_v, 1.0, "V"));
        line("power", self.power.clone());
        line(
            "chip",
            match &self.chip_inserted {
                Item::Ok(true) => "inserted".into(),
                Item::Ok(false) => "not inserted".into(),
                Item::Error(e) => format!("error: {e}"),
            },
        );
        line("temperature", scaled(&self.temperature_c, 1.0, "°C"));
        line(
            "input current (RMS)",
            scaled(&self.input_current_a, 1e3, "mA"),
        );
        line(
            "output current (RMS)",
            scaled(&self.output_current_a, 1e3, "mA"),
        );
        line("capacitance", scaled(&self.capacitance_f, 1e12, "pF"));
        line("disabled channels", list(&self.disabled_channels));
        line("actuated channels", list(&self.actuated_channels));
        line("board wall time", format!("{} s", self.wall_time_s));
        for t in &self.timings {
            let failed = t
                .failed
                .as_ref()
                .map(|e| format!("; failed: {e}"))
                .unwrap_or_default();
            line(
                &format!("round trip {}", t.call),
                format!(
                    "p50 {:.2} ms, max {:.2} ms ({} calls{failed})",
                    t.p50_us as f64 / 1e3,
                    t.max_us as f64 / 1e3,
                    t.samples
                ),
            );
        }
        if let Some(a) = &self.actuation {
            line("actuated channel", a.channel.to_string());
            line("  measured HV", scaled(&a.high_voltage_v, 1.0, "V"));
            line("  capacitance", scaled(&a.capacitance_f, 1e12, "pF"));
            if let Some(e) = &a.error {
                line("  error", e.clone());
            }
            line(
                "  all off after",
                match &a.all_off_after {
                    Item::Ok(true) => "yes".into(),
                    Item::Ok(false) => "NO: HV or a channel is still on".into(),
                    Item::Error(e) => format!("unknown: {e}"),
                },
            );
        }
        let counters: Vec<String> = self
            .link
            .0
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        line("link", counters.join(", "));
        out
    }
}
