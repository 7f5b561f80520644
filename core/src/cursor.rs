//! The inbox cursor: an opaque position in `(created_at, event_id)` order.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// A position in the inbox's keyset order, `(created_at, event_id)`. Opaque to users:
/// base64url of a version byte, the microseconds since the Unix epoch and the UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// `created_at` of the last event seen, in microseconds since 1970-01-01 UTC.
    pub created_at_us: i64,
    /// `event_id` of the last event seen.
    pub event_id: [u8; 16],
}

/// Why a cursor string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorError {
    /// Not base64url.
    Encoding,
    /// Decodes, but not to a cursor of this version.
    Shape,
}

impl std::fmt::Display for CursorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CursorError::Encoding => "cursor is not valid base64url",
            CursorError::Shape => "cursor was not produced by this server",
        })
    }
}

impl std::error::Error for CursorError {}

const VERSION: u8 = 1;
const LEN: usize = 1 + 8 + 16;

impl Cursor {
    /// The cursor as the opaque string handed to users.
    pub fn encode(&self) -> String {
        let mut bytes = [0u8; LEN];
        bytes[0] = VERSION;
        bytes[1..9].copy_from_slice(&self.created_at_us.to_be_bytes());
        bytes[9..].copy_from_slice(&self.event_id);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Parses a string from [`Cursor::encode`].
    pub fn decode(s: &str) -> Result<Cursor, CursorError> {
        if s.len() > 64 {
            return Err(CursorError::Shape);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| CursorError::Encoding)?;
        if bytes.len() != LEN || bytes[0] != VERSION {
            return Err(CursorError::Shape);
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&bytes[1..9]);
        let mut event_id = [0u8; 16];
        event_id.copy_from_slice(&bytes[9..]);
        Ok(Cursor {
            created_at_us: i64::from_be_bytes(ts),
            event_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(ts in any::<i64>(), id in any::<[u8; 16]>()) {
            let c = Cursor { created_at_us: ts, event_id: id };
            let s = c.encode();
            prop_assert!(s.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'));
            prop_assert_eq!(Cursor::decode(&s), Ok(c));
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,80}") {
            let _ = Cursor::decode(&s);
        }
    }

    #[test]
    fn refuses_what_it_did_not_make() {
        assert_eq!(Cursor::decode("not a cursor!"), Err(CursorError::Encoding));
        assert_eq!(Cursor::decode(""), Err(CursorError::Shape));
        assert_eq!(Cursor::decode("AAAA"), Err(CursorError::Shape));
        let mut wrong_version = Cursor {
            created_at_us: 5,
            event_id: [1; 16],
        }
        .encode();
        wrong_version.replace_range(0..2, "Ag");
        assert_eq!(Cursor::decode(&wrong_version), Err(CursorError::Shape));
        assert_eq!(Cursor::decode(&"A".repeat(200)), Err(CursorError::Shape));
    }
}
