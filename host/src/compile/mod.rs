//! Compilation, kept out of the host: the [`driver`] runs a short-lived compile process per
//! module load and code variant (its own side is `crate::child::compile`), [`validate`] is
//! what that process does with the bytes ([`proposals`]: which proposals a module uses),
//! and [`cache`] keeps the artifacts on disk, keyed by content hash and engine fingerprint.

pub mod cache;
pub mod driver;
pub(crate) mod proposals;
pub mod validate;
