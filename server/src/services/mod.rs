//! What runs inside the server between the HTTP layer and the database, apart from the
//! limits (`crate::guard`): group commit for `POST /events` (`group.rs`), the queue's
//! bound (`queue_bound.rs`), and the live stream's hub and subscribers (`live.rs`).

pub mod group;
pub mod live;
pub mod queue_bound;
