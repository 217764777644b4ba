//! Bytes in, `Config::parse` out: any text must give a config or a located
//! error, never a panic. A config that parses must also build the user
//! directory and catalog a gateway snapshot is made of.
//!
//! The path points into a directory that does not exist, so relative
//! `secrets_file` / `password_file` entries fail like a missing file.

#![no_main]

use std::path::Path;

use adjunct_gateway::config::Config;
use adjunct_gateway::gateway::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Config::load reads with read_to_string: only UTF-8 reaches parse.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent-adjunct-gateway-fuzz/gateway.toml");
    match Config::parse(path, text) {
        Ok(config) => {
            let snap = Snapshot::new(config);
            for user in &snap.config.users {
                assert!(adjunct_gateway::config::valid_user_name(&user.name));
                let _ = snap.directory.live_rights(&user.name);
            }
        }
        Err(e) => {
            if let Some(line) = e.line {
                assert!(
                    line >= 1 && line <= text.lines().count() + 1,
                    "line {line} outside the text: {e}"
                );
            }
            let _ = e.to_string();
        }
    }
});
