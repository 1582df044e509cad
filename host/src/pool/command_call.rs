//! [`CommandCall`]: runs of a WASI command, typed so that only [`CommandSpec`]s go in and
//! [`CommandOutput`]s come out.

use std::time::Duration;

use crate::command::{CommandOutput, CommandSpec};
use crate::error::TaskError;
use crate::limits::Limits;
use crate::spec::TaskSpec;

use super::{AsCompleted, Call, Imap, OutputStream, QueueFull, Task};

/// Runs of the WASI command of a module (its `_start`), with limits to adjust before
/// submitting [`CommandSpec`]s. Made by [`Pool::command`](crate::Pool::command).
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use wasmpool::{CommandSpec, Pool};
/// let pool = Pool::builder().build()?;
/// let wc = pool.load_file("target/wasi-c/wc.wasm")?;
/// let out = pool
///     .command(&wc)
///     .timeout(Duration::from_secs(5))
///     .submit(CommandSpec::new().stdin("to be or not to be\n"))
///     .wait()?;
/// assert_eq!(out.exit_code, 0);
/// # Ok(()) }
/// ```
///
/// Only a [`CommandSpec`] is accepted, so a plain argument is refused when compiling
/// rather than when the task runs (a `Call` of `_start` would take it, and fail):
///
/// ```compile_fail
/// # fn f(pool: wasmpool::Pool, m: wasmpool::Module) {
/// let _: wasmpool::Task<wasmpool::CommandOutput> = pool.command(&m).submit(42i64);
/// # }
/// ```
///
/// Like [`Call`], a `CommandCall` owns what it needs: keep it, clone it, move it into
/// threads and tasks.
#[derive(Clone)]
pub struct CommandCall {
    call: Call,
}

impl CommandCall {
    pub(super) fn new(call: Call) -> Self {
        CommandCall { call }
    }

    /// How many times to re-run a run whose worker process dies under it; see
    /// [`Call::max_retries`].
    pub fn max_retries(self, n: u32) -> Self {
        CommandCall::new(self.call.max_retries(n))
    }

    /// Fuel for each run; `None` for unlimited; see [`Call::fuel`].
    pub fn fuel(self, fuel: impl Into<Option<u64>>) -> Self {
        CommandCall::new(self.call.fuel(fuel))
    }

    /// Wall-clock limit for each run; `None` for unlimited; see [`Call::timeout`].
    pub fn timeout(self, timeout: impl Into<Option<Duration>>) -> Self {
        CommandCall::new(self.call.timeout(timeout))
    }

    /// Memory limit for each run, in bytes; see [`Call::memory`].
    pub fn memory(self, bytes: impl Into<Option<u64>>) -> Self {
        CommandCall::new(self.call.memory(bytes))
    }

    /// The limits and retries `spec` sets, over this call's; see [`Call::spec`]. (The
    /// spec's command parts are what [`submit`](Self::submit) takes: `spec.command`.)
    pub fn spec(self, spec: &TaskSpec) -> Self {
        CommandCall::new(self.call.spec(spec))
    }

    /// All limits for each run; see [`Call::limits`].
    pub fn limits(self, limits: Limits) -> Self {
        CommandCall::new(self.call.limits(limits))
    }

    /// Runs the command once; see [`Call::submit`].
    pub fn submit(&self, spec: CommandSpec) -> Task<CommandOutput> {
        self.call.submit(spec)
    }

    /// Runs the command once if the pool's queue has room now; see [`Call::try_submit`].
    pub fn try_submit(&self, spec: CommandSpec) -> Result<Task<CommandOutput>, QueueFull> {
        self.call.try_submit(spec)
    }

    /// [`CommandCall::submit`] for async code; see [`Call::submit_async`].
    #[allow(clippy::async_yields_async)]
    pub fn submit_async(
        &self,
        spec: CommandSpec,
    ) -> impl std::future::Future<Output = Task<CommandOutput>> + Send + 'static {
        self.call.submit_async(spec)
    }

    /// Runs the command like [`CommandCall::submit`], but sends its stdout and stderr to the
    /// returned channel as the program writes them (up to `Limits::stdout_cap`/`stderr_cap`
    /// each), instead of keeping them in [`CommandOutput`]. The channel ends when the task
    /// does.
    ///
    /// The channel holds at most [`STREAM_CHUNKS`](crate::command::STREAM_CHUNKS) chunks of
    /// up to [`STREAM_CHUNK_BYTES`](crate::command::STREAM_CHUNK_BYTES):
    /// when the reader falls behind, the program blocks in its write (its wall clock runs
    /// on), like a process writing to a full pipe. So read the channel while the task runs:
    /// waiting for the task first can only end at its timeout once the program has written
    /// more than the channel holds. Keep the task while you read (or [`Task::detach`] it):
    /// dropping it unfinished cancels the run, and the channel ends there.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use wasmpool::{CommandSpec, OutputChunk, Pool};
    /// let pool = Pool::builder().build()?;
    /// let wc = pool.load_file("target/wasi-c/wc.wasm")?;
    /// let (task, output) = pool.command(&wc).submit_streaming(CommandSpec::new().stdin("a b"));
    /// for chunk in output {
    ///     if let OutputChunk::Stdout(bytes) = chunk {
    ///         print!("{}", String::from_utf8_lossy(&bytes));
    ///     }
    /// }
    /// assert_eq!(task.wait()?.exit_code, 0);
    /// # Ok(()) }
    /// ```
    #[must_use = "dropping the task cancels the run; keep it while reading, or detach it"]
    pub fn submit_streaming(&self, spec: CommandSpec) -> (Task<CommandOutput>, OutputStream) {
        self.call.submit_streaming(spec)
    }

    /// Runs the command once per spec, spread over the workers; results in input order.
    pub fn map(
        &self,
        specs: impl IntoIterator<Item = CommandSpec>,
    ) -> Vec<Result<CommandOutput, TaskError>> {
        self.call.map(specs)
    }

    /// Like [`CommandCall::map`], yielding each result as soon as it and those before it are
    /// done; see [`Call::imap`].
    pub fn imap<I>(&self, specs: I) -> Imap<CommandOutput>
    where
        I: IntoIterator<Item = CommandSpec>,
        I::IntoIter: Send + 'static,
    {
        self.call.imap(specs)
    }

    /// Runs the command once per spec; yields `(input index, result)` as runs finish; see
    /// [`Call::map_unordered`].
    pub fn map_unordered<I>(&self, specs: I) -> AsCompleted<CommandOutput>
    where
        I: IntoIterator<Item = CommandSpec>,
        I::IntoIter: Send + 'static,
    {
        self.call.map_unordered(specs)
    }
}
