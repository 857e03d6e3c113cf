//! The Go daemon's `xapsd.yaml`, through `xapsd import-go-config`'s
//! translator; what it prints must be a JSON object the daemon can read.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use xapsd::config::{Config, ConfigError};
use xapsd::import::go_config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match go_config(text) {
        Ok(translated) => {
            let mut config = Config::default();
            let read = config.apply_json(&translated.json, Path::new("translated.json"));
            assert!(
                !matches!(
                    read,
                    Err(ConfigError::NotJson { .. } | ConfigError::NotAnObject { .. })
                ),
                "translation is not a JSON object: {:?}",
                translated.json
            );
        }
        Err(e) => drop(e.to_string()),
    }
});
