//! Integration tests of inbetweenies-conflict: one test binary, one module per concern.

mod common;
mod digest;
mod merge_table;
mod merkle;
mod properties;
mod reference;
mod rule_table;
mod vclock;
