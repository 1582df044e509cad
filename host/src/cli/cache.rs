//! `wasmpool cache [info|clear]`: where the on-disk compile cache is, what it holds and how
//! large it may grow; clearing it.

use anyhow::{anyhow, Context};
use bytesize::ByteSize;
use clap::{Args, Subcommand};
use wasmpool::compile::cache::{self, DEFAULT_LIMIT, LIMIT_ENV};

#[derive(Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Subcommand, Clone, Copy)]
enum Action {
    /// Show the cache's location, entries, total size and bound (the default).
    Info,
    /// Remove every entry (modules are compiled again when next loaded).
    Clear,
}

pub fn cache(args: CacheArgs) -> anyhow::Result<i32> {
    let dir = cache::default_dir()
        .ok_or_else(|| anyhow!("no cache directory: neither $XDG_CACHE_HOME nor $HOME is set"))?;
    match args.action.unwrap_or(Action::Info) {
        Action::Info => {
            let usage =
                cache::usage(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
            let (limit, from) = match cache::limit_from_env().map_err(|e| anyhow!(e))? {
                Some(limit) => (limit, format!("from ${LIMIT_ENV}")),
                None => (
                    DEFAULT_LIMIT,
                    format!("the default; set ${LIMIT_ENV} to change"),
                ),
            };
            println!("location: {}", dir.display());
            println!("entries:  {} ({})", usage.entries, ByteSize(usage.bytes));
            println!(
                "limit:    {} ({from}); past it the least recently used entries are removed",
                ByteSize(limit)
            );
        }
        Action::Clear => {
            let removed =
                cache::clear(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
            println!(
                "removed {} entries ({}) from {}",
                removed.entries,
                ByteSize(removed.bytes),
                dir.display()
            );
        }
    }
    Ok(super::EXIT_OK)
}
