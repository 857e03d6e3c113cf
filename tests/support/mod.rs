//! Shared support for xapsd's integration tests (`mod support;` in each
//! test file).
//!
//! Integration tests drive the real daemon binary from the outside, as
//! Dovecot and Apple would: [`plugin`] speaks the Dovecot plugin's HTTP/1.1,
//! [`mock_apns`] plays APNs over TLS + HTTP/2, [`certs`] makes the
//! certificates both sides need, [`daemon`] runs and watches the binary,
//! [`jwt`] checks provider tokens as APNs would, [`mock_caservice`] plays
//! Apple's push certificate service (feature `apple-id`), and [`tempdir`] gives every
//! test its own files. Not every test binary uses every helper, hence the
//! `dead_code` allowance.

#![allow(dead_code)]

pub mod apple;
pub mod certs;
pub mod daemon;
pub mod jwt;
pub mod mock_apns;
#[cfg(feature = "apple-id")]
pub mod mock_caservice;
pub mod plugin;
pub mod tempdir;

use std::time::Duration;

/// Default patience for events the tests wait on; generous because a debug
/// build on a 2-core CI box running other builds can be slow, and a wait
/// that succeeds returns as soon as its event happens anyway.
pub const TIMEOUT: Duration = Duration::from_secs(20);
