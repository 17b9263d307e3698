//! libFuzzer entry point for [`goodies_fuzz::targets::three_way_merge`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| goodies_fuzz::targets::three_way_merge(data));
