//! Bytes from a legacy-socket plugin: the first line (as the listener cuts
//! it) through the line parser, and the refusal through the reply encoder.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xapsd::limits::Limits;
use xapsd::plugin::legacy::{parse, reply, Request};
use xapsd::service::device_from;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let data = &data[..data.len().min(limits.max_legacy_line)];
    let line = match data.iter().position(|&b| b == b'\n') {
        Some(i) => &data[..=i],
        None => data,
    };
    match parse(line) {
        Ok(Request::Register(request)) => drop(device_from(request, &limits)),
        Ok(Request::Notify(_)) => {}
        Err(e) => {
            // The answer is one line whatever the peer sent.
            let answer = reply(Err(e.to_string()));
            assert!(answer.ends_with(b"\r\n"));
            let body = &answer[..answer.len() - 2];
            assert!(!body.contains(&b'\r') && !body.contains(&b'\n'));
        }
    }
});
