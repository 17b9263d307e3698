//! Workspace-level end-to-end tests live in `tests/e2e_*.rs`; this library is empty.
