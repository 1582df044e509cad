//! The child processes' side: what runs inside a worker or compile process once
//! [`worker_main`](crate::worker_main) ([`entry`]) has recognised its hidden mode — the
//! worker's loop ([`serve`]) and the compile process ([`compile`]). The host's side of the
//! same processes is `crate::worker` (workers) and `crate::compile::driver` (compilation).

pub mod compile;
pub mod entry;
pub mod serve;
