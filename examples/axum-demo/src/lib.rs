//! The repository README's Rust examples, compiled as this package's doctests: `cargo test
//! --doc -p axum-demo` (part of `cargo test --workspace`) fails when one stops compiling.
//! The examples bind ports and need a Nacos, so they are built (`no_run`), not run.

#![forbid(unsafe_code)]

/// The README, whose `rust` code blocks are the doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct Readme;
