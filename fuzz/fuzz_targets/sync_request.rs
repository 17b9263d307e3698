//! libFuzzer entry point for [`goodies_fuzz::targets::sync_request`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| goodies_fuzz::targets::sync_request(data));
