//! A `/register` or `/notify` body, through the JSON readers and, for a
//! registration, the validation every stored device passes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xapsd::limits::Limits;
use xapsd::plugin::json;
use xapsd::service::device_from;

fuzz_target!(|data: &[u8]| {
    match json::register(data) {
        Ok(request) => {
            if let Ok(device) = device_from(request, &Limits::default()) {
                // What the store keys on must be what APNs paths accept.
                assert!(device.token.bytes().all(|b| b.is_ascii_hexdigit()));
                assert!(!device.mailboxes.is_empty());
            }
        }
        Err(e) => drop(e.to_string()),
    }
    if let Err(e) = json::notify(data) {
        drop(e.to_string());
    }
});
