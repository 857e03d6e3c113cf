//! A config file's text, read over the defaults and checked as a whole, as
//! `Config::from_file` does at start.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use xapsd::config::Config;

fuzz_target!(|data: &[u8]| {
    // from_file reads the file as UTF-8 text; anything else never gets here.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut config = Config::default();
    match config.apply_json(text, Path::new("/etc/xapsd/xapsd.json")) {
        Ok(()) => {
            if let Err(e) = config.validate() {
                drop(e.to_string());
            }
            drop(format!("{config:?}"));
        }
        Err(e) => drop(e.to_string()),
    }
});
