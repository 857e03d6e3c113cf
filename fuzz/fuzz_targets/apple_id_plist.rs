//! Answers of Apple's push certificate service (Apple-ID identity): the
//! plist reader must refuse anything malformed or oddly shaped with a
//! `PlistError`, never panic or recurse without bound.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xapsd::identity::apple_id::plist::{parse_response, ServiceAnswer};

fuzz_target!(|data: &[u8]| {
    match parse_response(data) {
        Ok(ServiceAnswer::Issued(certs)) => drop(certs),
        // ErrorCode 0 means issued: a refusal always carries another code.
        Ok(ServiceAnswer::Refused { code, .. }) => assert_ne!(code, 0),
        Err(e) => drop(e.to_string()),
    }
});
