//! xapsd: real push for iOS Mail on self-hosted Dovecot.
//!
//! The data path, one module each, dependencies pointing one way:
//!
//! ```text
//! plugin (HTTP/1.1 API, legacy socket)  ->  service  ->  store (redb)
//!                                                \->  dispatch  ->  apns (h2 + rustls)  <- identity
//! ```
//!
//! [`plugin`] frames requests; [`service`] decides what they mean;
//! [`store`] keeps registrations durable and knows nothing of HTTP or APNs;
//! [`dispatch`] holds, folds, queues and retries pushes and applies APNs
//! outcomes to the store; [`apns`] talks HTTP/2 to Apple with whatever
//! [`identity`] is in force. [`daemon`] wires them together on smol;
//! [`metrics`] renders their counters for `/health` and `/metrics`.

pub mod admin;
pub mod apns;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dispatch;
pub mod files;
pub mod identity;
pub mod import;
pub mod limits;
pub mod log_gate;
pub mod metrics;
pub mod net;
pub mod pass;
pub mod plugin;
pub mod privacy;
pub mod privileges;
pub mod secrets;
pub mod service;
pub mod store;
