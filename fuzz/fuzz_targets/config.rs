//! Any bytes as a configuration file: `parse` returns a config or a list of
//! problems, never panics; every problem names where it is.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = edge_proxy::config::parse("fuzz.yaml", &text) {
        assert!(!e.problems.is_empty(), "an error without a problem");
        let report = e.to_string();
        assert!(report.starts_with("fuzz.yaml: "), "{report}");
    }
});
