//! # triggers-core
//!
//! The logic of triggers that needs no Postgres: the SQLSTATEs the extension raises,
//! the inbox cursor format, the retry backoff schedule, the API-key format and the
//! webhook signatures ([`webhooks`]). The
//! extension, the client and the server all use these, so they agree by construction.
//!
//! ```
//! use triggers_core::{backoff_ms, Cursor, ErrorCode};
//! assert_eq!(backoff_ms(3, 1_000, 300_000), 4_000);
//! let c = Cursor { created_at_us: 1, event_id: [7; 16] };
//! assert_eq!(Cursor::decode(&c.encode()), Ok(c));
//! assert_eq!(ErrorCode::from_sqlstate("TG006"), Some(ErrorCode::NotFound));
//! ```
#![deny(missing_docs)]

mod backoff;
mod codes;
mod cursor;
mod keys;
pub mod webhooks;

pub use backoff::backoff_ms;
pub use codes::ErrorCode;
pub use cursor::{Cursor, CursorError};
pub use keys::{constant_time_eq, key_hash, key_id, KEY_PREFIX, MAX_KEY_LEN};
