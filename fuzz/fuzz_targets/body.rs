//! libFuzzer entry point for [`goodies_fuzz::targets::body`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| goodies_fuzz::targets::body(data));
