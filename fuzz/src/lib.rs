//! Fuzz targets for the protocol crates; see [`targets`] for what each checks.

pub mod targets;
