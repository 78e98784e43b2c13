//! Small formatting helpers shared by the reports.

use super::analysis::Analysis;

/// `1.5 MiB`, `312 B`: binary units, one decimal above bytes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Signed variant of [`bytes`] with an explicit sign.
pub fn signed_bytes(n: i64) -> String {
    if n < 0 {
        format!("-{}", bytes(n.unsigned_abs()))
    } else {
        format!("+{}", bytes(n as u64))
    }
}

/// `1.234 s`, `12.5 ms`.
pub fn duration(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.3} s", ns as f64 / 1e9)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

/// What "the peak" of an analysis is: `the high-water mark`, or with a `--temporal` window
/// `the high-water mark between 450.0 ms and 550.0 ms` (`after ...`, `before ...` when the
/// window is open at one end). The window named is the one the peak was taken in: events are
/// dated by the memory samples (every 10 ms), so its ends move to the samples at or after the
/// ones asked for, and then the text says so.
pub fn peak_moment(a: &Analysis) -> String {
    let Some(asked) = a.window_ns else {
        return "the high-water mark".to_string();
    };
    let used = a.peak_window_ns.unwrap_or(asked);
    let mut o = match used {
        // `--temporal ..` or `0..`: the whole run (not "before 18446744073.710 s").
        (0, u64::MAX) => "the high-water mark".to_string(),
        (0, to) => format!("the high-water mark before {}", duration(to)),
        (from, u64::MAX) => format!("the high-water mark after {}", duration(from)),
        (from, to) => format!(
            "the high-water mark between {} and {}",
            duration(from),
            duration(to)
        ),
    };
    if used != asked {
        let end = |t: u64, open: u64| {
            if t == open {
                String::new()
            } else {
                duration(t)
            }
        };
        o += &format!(
            ", the window {}..{} moved to the memory samples",
            end(asked.0, 0),
            end(asked.1, u64::MAX)
        );
    }
    o
}

/// Thousands separators: `1,234,567`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` things, counted and named: `counted(1, "block", "blocks")` is "1 block",
/// `counted(2048, ...)` "2,048 blocks".
pub fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", count(n), if n == 1 { one } else { many })
}

/// Escapes text for HTML element content and attribute values.
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 (for `data:` URLs).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Truncates `s` to at most `max` characters, with an ellipsis.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::count(1234567), "1,234,567");
        assert_eq!(super::base64(b"abcd"), "YWJjZA==");
        assert_eq!(super::base64(b"abc"), "YWJj");
        assert_eq!(
            super::html("<script>&'\""),
            "&lt;script&gt;&amp;&#39;&quot;"
        );
    }
}
