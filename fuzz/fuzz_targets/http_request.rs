//! A plugin connection's bytes: pipelined requests framed by the daemon's
//! head parser and Basic credential check, each body handed to the parser
//! its route uses.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use xapsd::admin;
use xapsd::auth::{AuthSetting, PluginAuth};
use xapsd::limits::Limits;
use xapsd::plugin::http::{frame, Framing};
use xapsd::plugin::json;

/// The credentials of the basic-auth captures, so that seeds reach `Accepted`.
const FIXTURE_AUTH: &str = "xapsd:s3cret";

fn auth() -> &'static PluginAuth {
    static AUTH: OnceLock<PluginAuth> = OnceLock::new();
    AUTH.get_or_init(|| PluginAuth::load(&AuthSetting::parse(FIXTURE_AUTH).unwrap()).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut rest = data;
    while let Framing::Request(request) = frame(rest, &limits, Some(auth())) {
        let total = request.head_len + request.body_len;
        // Progress and bounds: a framed request is never empty, never longer
        // than what was buffered, and its body is within the limit.
        assert!(request.head_len > 0 && total <= rest.len());
        assert!(request.body_len <= limits.max_request_body);
        let _ = request.verdict.map(|v| v.reason());
        let body = &rest[request.head_len..total];
        match (request.path.as_str(), request.method.as_str()) {
            ("/register", "POST") => drop(json::register(body).map_err(|e| e.to_string())),
            ("/notify", "POST") => drop(json::notify(body).map_err(|e| e.to_string())),
            (path, _) if path.starts_with("/admin/") => {
                drop(admin::Request::parse(path, body).map_err(|e| e.to_string()))
            }
            _ => {}
        }
        if !request.keep_alive {
            break;
        }
        rest = &rest[total..];
    }
});
