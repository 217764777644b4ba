//! Bytes in, `http::read_head` out (over an in-memory reader), then the
//! Basic credentials of any `Authorization` header: never a panic, and the
//! bytes kept after a complete head are exactly the ones read past it.

#![no_main]

use std::sync::OnceLock;

use adjunct_gateway::http::{self, HeadError};
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    // The smallest head bound the config allows, so 431 is reachable too.
    let mut reader = data;
    match runtime().block_on(http::read_head(&mut reader, 1024)) {
        Ok((head, rest)) => {
            let consumed = data.len() - reader.len();
            assert_eq!(
                data.get(consumed - rest.len()..consumed),
                Some(&rest[..]),
                "the bytes after the head are not the ones read past it"
            );
            assert!(!head.path.contains('?'), "query string kept: {}", head.path);
            if let Some(auth) = head.authorization.as_deref() {
                let _ = http::basic_credentials(auth);
            }
        }
        Err(HeadError::Io | HeadError::Malformed | HeadError::TooLarge) => {}
    }
});
