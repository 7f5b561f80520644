//! What keeps one client or tenant from locking out, starving or exhausting the others
//! (README → Limits): who a request comes from ([`address`]), API keys checked so that
//! no flood of bad ones fails a good one ([`keys`]), token buckets ([`buckets`]) and the
//! per-tenant limits built on them ([`tenants`]). The HTTP layer applies them (http/auth.rs
//! and the routes that send events or open streams); they know nothing of HTTP.

pub mod address;
pub mod buckets;
pub mod keys;
pub mod tenants;

pub use address::{ClientKey, TrustedProxies};
pub use keys::{Authenticated, Denied, KeyStore};
pub use tenants::{Limits, Over, StreamSlot, Tenants};
