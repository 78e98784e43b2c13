//! Reading the environment without allocating (`std::env` builds `OsString`s).

use core::ffi::CStr;

/// The value of environment variable `name`, or `None` when unset.
///
/// The slice points into the process environment; it stays valid as long as nobody calls
/// `setenv`/`unsetenv` on this name, which tidemark never does.
pub fn var(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; getenv returns null or a NUL-terminated string.
    unsafe {
        let value = libc::getenv(name.as_ptr());
        if value.is_null() {
            None
        } else {
            Some(CStr::from_ptr(value).to_bytes())
        }
    }
}

/// Parses a decimal unsigned integer, with an optional `k`/`m`/`g` (binary) suffix.
pub fn parse_size(text: &[u8]) -> Option<usize> {
    let (digits, shift) = match text.last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 10),
        b'm' | b'M' => (&text[..text.len() - 1], 20),
        b'g' | b'G' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: usize = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add((d - b'0') as usize)?;
    }
    value.checked_mul(1usize << shift)
}

/// True when `name` is set to something other than empty or `0`.
pub fn flag(name: &CStr) -> bool {
    matches!(var(name), Some(v) if !v.is_empty() && v != b"0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size(b"0"), Some(0));
        assert_eq!(parse_size(b"4096"), Some(4096));
        assert_eq!(parse_size(b"4M"), Some(4 << 20));
        assert_eq!(parse_size(b"2k"), Some(2048));
        assert_eq!(parse_size(b""), None);
        assert_eq!(parse_size(b"M"), None);
        assert_eq!(parse_size(b"12x"), None);
        assert_eq!(parse_size(b"99999999999999999999999"), None);
    }
}
