//! Validation of stream and group names, done before anything touches storage.

use crate::error::{Error, NameKind, printable};

/// Longest accepted stream or group name, in bytes (Kafka's topic limit).
pub const MAX_NAME_LEN: usize = 249;

/// Checks a stream or group name: 1 to [`MAX_NAME_LEN`] characters from `[A-Za-z0-9._-]`.
///
/// The character set keeps names safe as storage keys, file-system-like paths and log fields,
/// and lets drivers build composite keys with `/` without ambiguity.
pub(crate) fn validate_name(kind: NameKind, name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("longer than 249 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidName {
            kind,
            name: printable(name),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_names() {
        for name in [
            "orders",
            "orders.v2",
            "a-b_c",
            "X",
            &"a".repeat(MAX_NAME_LEN),
        ] {
            assert!(validate_name(NameKind::Stream, name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for name in [
            "",
            "with space",
            "slash/inside",
            "'; DROP TABLE streams; --",
            "tab\there",
            "nul\0",
            "é",
            &"a".repeat(MAX_NAME_LEN + 1),
        ] {
            let err = validate_name(NameKind::Group, name).expect_err("rejected");
            assert!(
                matches!(
                    err,
                    Error::InvalidName {
                        kind: NameKind::Group,
                        ..
                    }
                ),
                "{name}"
            );
        }
    }
}
