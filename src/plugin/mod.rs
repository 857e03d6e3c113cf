//! Front ends the Dovecot plugin talks to.
//!
//! Each one only frames requests and answers; the meaning of a registration
//! or notification lives in [`crate::service`].

pub mod http;
pub mod json;
