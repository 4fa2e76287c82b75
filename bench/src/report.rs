//! Collecting figures and printing them side by side: each flowstream figure next to the raw
//! ceilings and peers measured for the same scenario, with the ratio.

use std::fmt::Write as _;

/// One measured figure.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    pub(crate) scenario: String,
    pub(crate) system: String,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    /// Latencies, memory and CPU: lower is better. Throughput: higher is better.
    pub(crate) lower_is_better: bool,
}

/// All figures of one run, in the order they were measured.
#[derive(Debug, Default)]
pub(crate) struct Report {
    figures: Vec<Figure>,
    skipped: Vec<(String, String, String)>,
}

/// Systems whose name starts with this are the ones the others are compared to.
pub(crate) const FLOWSTREAM: &str = "flowstream";

impl Report {
    pub(crate) fn rate(&mut self, scenario: &str, system: &str, per_second: f64) {
        self.push(scenario, system, per_second, "msg/s", false);
    }

    pub(crate) fn push(
        &mut self,
        scenario: &str,
        system: &str,
        value: f64,
        unit: &'static str,
        lower_is_better: bool,
    ) {
        println!(
            "  {scenario:<44} {system:<40} {} {unit}",
            group_digits(value)
        );
        self.figures.push(Figure {
            scenario: scenario.to_owned(),
            system: system.to_owned(),
            value,
            unit,
            lower_is_better,
        });
    }

    /// The rows `latency p50|p99|max {at}` of `system`, in milliseconds; nothing without a
    /// summary.
    pub(crate) fn latencies(
        &mut self,
        at: &str,
        system: &str,
        summary: Option<(
            std::time::Duration,
            std::time::Duration,
            std::time::Duration,
        )>,
    ) {
        let Some((p50, p99, max)) = summary else {
            return;
        };
        for (name, value) in [("p50", p50), ("p99", p99), ("max", max)] {
            let millis = value.as_secs_f64() * 1000.0;
            self.push(&format!("latency {name} {at}"), system, millis, "ms", true);
        }
    }

    /// A system that could not be measured (a peer that is not running, say), with why.
    pub(crate) fn skip(&mut self, scenario: &str, system: &str, why: String) {
        println!("  {scenario:<44} {system:<40} skipped: {why}");
        self.skipped
            .push((scenario.to_owned(), system.to_owned(), why));
    }

    /// The table: per scenario, the flowstream rows first, then the others with
    /// `flowstream ÷ this` for every flowstream row of the scenario.
    pub(crate) fn table(&self) -> String {
        let mut scenarios: Vec<&str> = Vec::new();
        for f in &self.figures {
            if !scenarios.contains(&f.scenario.as_str()) {
                scenarios.push(&f.scenario);
            }
        }
        let references: Vec<&str> = {
            let mut names: Vec<&str> = Vec::new();
            for f in &self.figures {
                if f.system.starts_with(FLOWSTREAM) && !names.contains(&f.system.as_str()) {
                    names.push(&f.system);
                }
            }
            names
        };
        let mut out = String::new();
        let _ = write!(out, "| scenario | system | figure |");
        for r in &references {
            let _ = write!(out, " {r} ÷ this |");
        }
        out.push('\n');
        out.push_str("|---|---|---:|");
        for _ in &references {
            out.push_str("---:|");
        }
        out.push('\n');
        for scenario in scenarios {
            let mut rows: Vec<&Figure> = self
                .figures
                .iter()
                .filter(|f| f.scenario == scenario)
                .collect();
            rows.sort_by_key(|f| !f.system.starts_with(FLOWSTREAM));
            for f in &rows {
                let _ = write!(
                    out,
                    "| {} | {} | {} {} |",
                    f.scenario,
                    f.system,
                    group_digits(f.value),
                    f.unit
                );
                for r in &references {
                    let reference = rows.iter().find(|g| g.system == *r);
                    match reference {
                        Some(g) if !f.system.starts_with(FLOWSTREAM) && f.value > 0.0 => {
                            let _ = write!(out, " {:.2} |", g.value / f.value);
                        }
                        _ => out.push_str(" |"),
                    }
                }
                out.push('\n');
            }
            for (_, system, why) in self.skipped.iter().filter(|s| s.0 == scenario) {
                let _ = write!(out, "| {scenario} | {system} | skipped: {why} |");
                for _ in &references {
                    out.push_str(" |");
                }
                out.push('\n');
            }
        }
        out
    }

    pub(crate) fn json(&self, run: serde_json::Value) -> serde_json::Value {
        let figures: Vec<serde_json::Value> = self
            .figures
            .iter()
            .map(|f| {
                serde_json::json!({
                    "scenario": f.scenario,
                    "system": f.system,
                    "value": f.value,
                    "unit": f.unit,
                    "lower_is_better": f.lower_is_better,
                })
            })
            .collect();
        let skipped: Vec<serde_json::Value> = self
            .skipped
            .iter()
            .map(|(scenario, system, why)| {
                serde_json::json!({ "scenario": scenario, "system": system, "why": why })
            })
            .collect();
        serde_json::json!({ "run": run, "figures": figures, "skipped": skipped })
    }
}

/// `1234567.8` as `1,234,568`; small values keep two decimals.
pub(crate) fn group_digits(value: f64) -> String {
    if value.abs() < 100.0 {
        return format!("{value:.2}");
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped() {
        assert_eq!(group_digits(1_234_567.4), "1,234,567");
        assert_eq!(group_digits(100.0), "100");
        assert_eq!(group_digits(12.345), "12.35");
    }

    #[test]
    fn ratios_compare_flowstream_with_each_other_row() {
        let mut report = Report::default();
        report.rate("produce", "flowstream (redb)", 200.0);
        report.rate("produce", "raw redb", 400.0);
        let table = report.table();
        let raw = table
            .lines()
            .find(|l| l.contains("raw redb"))
            .unwrap_or_default();
        assert!(raw.ends_with("| 0.50 |"), "{table}");
    }
}
