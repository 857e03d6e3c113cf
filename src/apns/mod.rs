//! The APNs provider API client: HTTP/2 over TLS to Apple.
//!
//! [`push`] builds requests and classifies Apple's answers into an
//! [`Outcome`]; [`connection`] makes one TLS + HTTP/2 connection; [`client`]
//! keeps that connection alive and multiplexes pushes over it. The client
//! only *reports* outcomes: deciding what they mean for a registration is
//! the dispatcher's job.

pub mod client;
pub mod connection;
pub mod push;

pub use client::ApnsClient;
pub use push::{Outcome, Push};
