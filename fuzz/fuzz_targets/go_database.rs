//! The Go daemon's `database.json`, through `xapsd import-go`'s reader
//! (registrations, and the mail push certificate with its key).

#![no_main]

use libfuzzer_sys::fuzz_target;
use xapsd::import::go_database;
use xapsd::limits::Limits;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match go_database(text, &Limits::default()) {
        Ok(db) => {
            if let Some(cert) = db.mail_cert {
                drop((cert.cert_pem(), cert.key_pem()));
            }
        }
        Err(e) => drop(e.to_string()),
    }
});
