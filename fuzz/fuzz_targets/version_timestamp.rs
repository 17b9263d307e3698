//! libFuzzer entry point for [`goodies_fuzz::targets::version_timestamp`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| goodies_fuzz::targets::version_timestamp(data));
