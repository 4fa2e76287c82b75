//! How things are printed: aligned tables for people, JSON for scripts, bodies and times
//! made safe for one line.

use std::fmt::Write as _;
use std::time::SystemTime;

/// A table printed with its columns aligned.
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: Vec<&'static str>) -> Self {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A time as RFC 3339 UTC with milliseconds.
pub(crate) fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// An optional time, `-` when absent.
pub(crate) fn maybe_time(at: Option<SystemTime>) -> String {
    at.map_or_else(|| "-".to_owned(), time)
}

/// Bytes on one line: UTF-8 text as it is, except `\\`, line breaks, tabs and other control
/// characters, which are escaped; bytes that are not UTF-8 as `\xNN`.
pub(crate) fn escaped(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// Bytes as lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_stay_on_one_line_and_keep_their_bytes_readable() {
        assert_eq!(escaped(b"plain text"), "plain text");
        assert_eq!(escaped("ключ 🚀".as_bytes()), "ключ 🚀");
        assert_eq!(escaped(b"a\nb\tc\\d\x07"), "a\\nb\\tc\\\\d\\u{7}");
        assert_eq!(escaped(b"ok\xff\xfeok"), "ok\\xff\\xfeok");
        assert_eq!(hex(b"\x00\xab"), "00ab");
    }

    #[test]
    fn tables_align_their_columns() {
        let mut table = Table::new(vec!["STREAM", "HEAD"]);
        table.row(vec!["orders".into(), "10".into()]);
        table.row(vec!["a".into(), "1000".into()]);
        assert_eq!(table.render(), "STREAM  HEAD\norders  10\na       1000\n");
    }
}
