//! Shard outputs of `predict` merged into one: each part's rows read back (the same format and
//! header as the first), every expected image's row exactly once, in the order one `predict`
//! over the same inputs writes them.

use crate::io::csv_line;
use crate::predict::output::Format;
use anyhow::{bail, Result};
use std::collections::HashMap;

/// The rows of one part by path: each row's text as it was written.
fn rows(text: &str, format: Format, origin: &str) -> Result<(Option<String>, Vec<(String, String)>)> {
    match format {
        Format::Jsonl => {
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let row: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{origin}:{}: not a row of predict: {e}", i + 1))?;
                let Some(path) = row.get("path").and_then(|p| p.as_str()) else { bail!("{origin}:{}: a row without a path", i + 1) };
                out.push((path.to_string(), format!("{line}\n")));
            }
            Ok((None, out))
        }
        Format::Csv => {
            let mut records = csv_line::records(text);
            let Some((_, header)) = records.next() else { return Ok((None, Vec::new())) };
            let header = header.map_err(|e| anyhow::anyhow!("{origin}:1: {e}"))?;
            let mut out = Vec::new();
            for (line, record) in records {
                let fields = record.map_err(|e| anyhow::anyhow!("{origin}:{line}: {e}"))?;
                let text = fields.iter().map(|f| csv_line::quote(f)).collect::<Vec<_>>().join(",") + "\n";
                out.push((fields.into_iter().next().unwrap_or_default(), text));
            }
            Ok((Some(header.join(",") + "\n"), out))
        }
    }
}

/// Merges `parts` (name, text) into one output: the header once, then the row of each of
/// `expected` (the input paths, in order). A part whose header differs from the first's, a
/// path with two rows, a row for no expected path, or an expected path without a row is an
/// error naming it.
pub fn merge(parts: &[(String, String)], expected: &[String], format: Format) -> Result<String> {
    let mut header: Option<(String, &str)> = None;
    let mut by_path: HashMap<String, (String, &str)> = HashMap::new();
    for (name, text) in parts {
        let (h, rows) = rows(text, format, name)?;
        match (&header, h) {
            (None, Some(h)) => header = Some((h, name)),
            (Some((first, from)), Some(h)) if *first != h => {
                bail!("{name}: its header {:?} differs from {from}'s {:?} (another run or --top-k?)", h.trim_end(), first.trim_end())
            }
            _ => {}
        }
        for (path, row) in rows {
            if let Some((_, other)) = by_path.get(&path) {
                bail!("{path:?} has a row in {other} and in {name}");
            }
            by_path.insert(path, (row, name));
        }
    }
    let mut out = header.map(|(h, _)| h).unwrap_or_default();
    let mut missing = Vec::new();
    for path in expected {
        match by_path.remove(path) {
            Some((row, _)) => out += &row,
            None => missing.push(path.as_str()),
        }
    }
    if !missing.is_empty() {
        bail!("{} of {} images have no row in the parts, e.g. {:?}", missing.len(), expected.len(), missing[0]);
    }
    if let Some((path, (_, part))) = by_path.iter().next() {
        bail!("{part} has a row for {path:?}, which is not among the inputs ({} such rows)", by_path.len());
    }
    Ok(out)
}
