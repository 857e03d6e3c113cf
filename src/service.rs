//! The register/notify service every plugin front end calls.
//!
//! The HTTP API and the legacy line protocol differ only in framing; what a
//! registration or a notification *means* is decided here once: validation,
//! the store write that must be durable before the answer, and handing
//! pushes to the dispatcher without waiting on Apple.

use std::fmt;
use std::sync::Arc;

use crate::dispatch::Dispatcher;
use crate::identity::IdentitySlot;
use crate::limits::Limits;
use crate::store::{Device, Store, StoreError};

/// The only subtopic iOS Mail sends; anything else is not a mail client.
pub const MAIL_SUBTOPIC: &str = "com.apple.mobilemail";

/// A device's `XAPPLEPUSHSERVICE` request, as the plugin forwards it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterRequest {
    pub account_id: String,
    pub device_token: String,
    pub subtopic: String,
    pub username: String,
    pub mailboxes: Vec<String>,
}

/// A mailbox event from Dovecot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyRequest {
    pub username: String,
    pub mailbox: String,
    /// Dovecot push-notification event names; very old plugins send none,
    /// which the front ends turn into `MessageNew`.
    pub events: Vec<String>,
}

/// What a notification led to; front ends map it to their status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// Pushes were queued or held for this many devices.
    Dispatched(usize),
    /// The user has devices, but none registered this mailbox.
    MailboxNotWatched,
    /// No device is registered for this user.
    UnknownUser,
}

/// Why a request was not served.
#[derive(Debug)]
pub enum ServiceError {
    /// The request itself is wrong; the text says which field and why.
    Invalid(String),
    /// The store could not read or durably write; the request may be retried.
    Store(StoreError),
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::Invalid(reason) => f.write_str(reason),
            ServiceError::Store(e) => write!(f, "store unavailable: {e}"),
        }
    }
}

impl std::error::Error for ServiceError {}

/// Events that mean "new mail is here": pushed at once rather than held.
pub fn is_urgent(event: &str) -> bool {
    matches!(event, "MessageNew" | "MessageAppend")
}

/// Shared by every front end.
pub struct Service {
    store: Store,
    dispatcher: Dispatcher,
    identity: IdentitySlot,
    limits: Arc<Limits>,
}

impl Service {
    pub fn new(
        store: Store,
        dispatcher: Dispatcher,
        identity: IdentitySlot,
        limits: Arc<Limits>,
    ) -> Self {
        Service {
            store,
            dispatcher,
            identity,
            limits,
        }
    }

    /// Stores the device durably and returns the topic the device must use.
    pub async fn register(&self, req: RegisterRequest) -> Result<String, ServiceError> {
        let device = device_from(req, &self.limits)?;
        log::debug!(
            "register: user {} device {} ({} mailboxes)",
            device.user,
            crate::privacy::Short(&device.token),
            device.mailboxes.len()
        );
        self.store
            .register(device)
            .await
            .map_err(ServiceError::Store)?;
        Ok(self.identity.topic())
    }

    /// Finds the user's devices for the mailbox and hands them to the
    /// dispatcher. Never waits on APNs.
    pub fn notify(&self, req: NotifyRequest) -> Result<NotifyOutcome, ServiceError> {
        if req.username.is_empty() {
            return Err(ServiceError::Invalid("field `Username` is empty".into()));
        }
        let user = req.username.to_lowercase();
        let devices = self
            .store
            .devices_to_notify(&user)
            .map_err(ServiceError::Store)?;
        if devices.is_empty() {
            return Ok(NotifyOutcome::UnknownUser);
        }
        let urgent = req.events.iter().any(|e| is_urgent(e));
        let mut dispatched = 0;
        for device in devices.iter().filter(|d| d.wants(&req.mailbox)) {
            if urgent {
                self.dispatcher.push_now(device);
            } else {
                self.dispatcher.hold(device);
            }
            dispatched += 1;
        }
        log::debug!(
            "notify: user {user} mailbox event(s) {:?}: {dispatched} of {} device(s)",
            req.events,
            devices.len()
        );
        Ok(if dispatched == 0 {
            NotifyOutcome::MailboxNotWatched
        } else {
            NotifyOutcome::Dispatched(dispatched)
        })
    }
}

/// Checks a registration and makes the device to store (registered now).
/// Every way into the store goes through here: the front ends via
/// [`Service::register`], and imports.
pub fn device_from(req: RegisterRequest, limits: &Limits) -> Result<Device, ServiceError> {
    let invalid = |s: String| Err(ServiceError::Invalid(s));
    let max = limits.max_field_len;
    for (name, value) in [
        ("ApsAccountId", &req.account_id),
        ("ApsDeviceToken", &req.device_token),
        ("Username", &req.username),
    ] {
        if value.is_empty() {
            return invalid(format!("field `{name}` is empty"));
        }
        if value.len() > max {
            return invalid(format!("field `{name}` is longer than {max} bytes"));
        }
        if value.chars().any(char::is_control) {
            return invalid(format!("field `{name}` holds control characters"));
        }
    }
    if req.subtopic != MAIL_SUBTOPIC {
        return invalid(format!("field `ApsSubtopic` must be {MAIL_SUBTOPIC}"));
    }
    // The token goes into the APNs request path: hex only.
    let token = &req.device_token;
    if !token.len().is_multiple_of(2) || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return invalid("field `ApsDeviceToken` is not a hex string".into());
    }
    if req.mailboxes.is_empty() {
        return invalid("field `Mailboxes` is empty".into());
    }
    if req.mailboxes.len() > limits.max_mailboxes_per_device {
        return invalid(format!(
            "field `Mailboxes` lists more than {} mailboxes",
            limits.max_mailboxes_per_device
        ));
    }
    if req.mailboxes.iter().any(|m| m.is_empty() || m.len() > max) {
        return invalid(format!(
            "field `Mailboxes` holds an empty name or one over {max} bytes"
        ));
    }
    let mut mailboxes = req.mailboxes;
    mailboxes.sort();
    mailboxes.dedup();
    Ok(Device {
        token: token.to_ascii_lowercase(),
        account_id: req.account_id,
        user: req.username.to_lowercase(),
        mailboxes,
        registered_at: crate::clock::unix_now(),
    })
}
