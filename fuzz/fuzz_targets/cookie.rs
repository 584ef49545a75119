//! Any bytes as a `Cookie` header: finding and decoding the affinity cookie
//! never panics, and only a value that the proxy itself could have issued
//! (16 lowercase hex digits, encoded back byte for byte) decodes.
#![no_main]

use edge_proxy::affinity::{decode, encode, find_cookie};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for name in ["route", "r", "a b"] {
        if let Some(value) = find_cookie(data, name) {
            if let Some(id) = decode(value) {
                assert_eq!(&encode(id)[..], value);
            }
        }
    }
    if let Some(id) = decode(data) {
        assert_eq!(&encode(id)[..], data);
    }
    if data.len() >= 8 {
        let id = u64::from_le_bytes(data[..8].try_into().unwrap());
        assert_eq!(decode(&encode(id)), Some(id));
    }
});
