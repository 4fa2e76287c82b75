//! `--median`: the median and spread of each figure over several runs' result files, and of
//! each ratio to flowstream computed within each run (ratios within one run are steadier than
//! the figures).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::BoxError;
use crate::report::{FLOWSTREAM, group_digits};

/// One figure of one run: `(scenario, system) -> (value, unit)`.
type Run = BTreeMap<(String, String), (f64, String)>;

fn load(path: &PathBuf) -> Result<(Vec<(String, String)>, Run), BoxError> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let mut order = Vec::new();
    let mut run = Run::new();
    for figure in json["figures"]
        .as_array()
        .ok_or("no figures in a result file")?
    {
        let key = (
            figure["scenario"].as_str().unwrap_or_default().to_owned(),
            figure["system"].as_str().unwrap_or_default().to_owned(),
        );
        let value = figure["value"].as_f64().unwrap_or(f64::NAN);
        let unit = figure["unit"].as_str().unwrap_or_default().to_owned();
        order.push(key.clone());
        run.insert(key, (value, unit));
    }
    Ok((order, run))
}

/// Median of `values` (the mean of the middle two for an even count) with min and max.
fn spread(mut values: Vec<f64>) -> Option<(f64, f64, f64)> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return None;
    }
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    Some((median, values[0], values[n - 1]))
}

/// The table for `files`.
pub(crate) fn table(files: &[PathBuf]) -> Result<String, BoxError> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut runs = Vec::new();
    for file in files {
        let (keys, run) = load(file)?;
        for key in keys {
            if !order.contains(&key) {
                order.push(key);
            }
        }
        runs.push(run);
    }
    let mut out = format!(
        "median of {} runs, [min – max]\n\n| scenario | system | figure | flowstream ÷ this |\n|---|---|---:|---:|\n",
        runs.len()
    );
    for (scenario, system) in &order {
        let key = (scenario.clone(), system.clone());
        let values: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.get(&key))
            .map(|v| v.0)
            .collect();
        let unit = runs
            .iter()
            .find_map(|r| r.get(&key))
            .map(|v| v.1.clone())
            .unwrap_or_default();
        let Some((median, low, high)) = spread(values) else {
            continue;
        };
        let _ = write!(
            out,
            "| {scenario} | {system} | {} {unit} [{} – {}] |",
            group_digits(median),
            group_digits(low),
            group_digits(high)
        );
        // Against each flowstream row of the same scenario, per run.
        let mut ratios = Vec::new();
        if !system.starts_with(FLOWSTREAM) {
            let references: Vec<&String> = order
                .iter()
                .filter(|(s, name)| s == scenario && name.starts_with(FLOWSTREAM))
                .map(|(_, name)| name)
                .collect();
            for reference in references {
                let per_run: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| {
                        let flow = r.get(&(scenario.clone(), reference.clone()))?.0;
                        let this = r.get(&key)?.0;
                        (this > 0.0).then(|| flow / this)
                    })
                    .collect();
                if let Some((m, lo, hi)) = spread(per_run) {
                    ratios.push(format!("{reference}: {m:.2} [{lo:.2} – {hi:.2}]"));
                }
            }
        }
        let _ = writeln!(out, " {} |", ratios.join("; "));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_value() {
        assert_eq!(spread(vec![3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(spread(vec![4.0, 1.0, 2.0, 3.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(spread(vec![]), None);
    }
}
