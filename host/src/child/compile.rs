//! The compile process's own side: raise the walls, check the host's handshake, read one
//! module on stdin, compile it (`compile::validate`) and answer one [`CompileReply`].

use std::io::{Read, Write};

use crate::compile::validate::{self, Compiler};
use crate::protocol;
use crate::sandbox::Metering;
use crate::walls::{harden, seccomp};

/// The compile process: reads a module on stdin, answers one [`CompileReply`] on stdout.
/// `host` is the host's handshake, its protocol and version already checked (the engine part
/// is checked here). With `instrument`, the module is first instrumented for an initializer
/// snapshot (`validate::instrument`).
pub fn serve_compile(
    host: &protocol::Handshake,
    user: Option<harden::WorkerUser>,
    memory: &str,
    metering: &str,
    instrument: bool,
) -> std::io::Result<()> {
    harden::close_inherited_fds(&[])?;
    // Before the parent-death signal, which a change of credentials clears.
    harden::drop_privileges(user)?;
    harden::die_with_parent();
    harden::not_dumpable()?;
    harden::no_new_privs()?;
    let ours = crate::sandbox::engine::digest()
        .map_err(|e| std::io::Error::other(format!("cannot create the engine: {e:#}")))?;
    if let Err(message) = host.check_engine(&ours) {
        eprintln!("{message}");
        std::process::exit(protocol::EXIT_VERSION_MISMATCH);
    }
    let memory: u64 = memory.parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad memory limit {memory:?}: {e}"),
        )
    })?;
    let metering = Metering::from_tag(metering).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad metering {metering:?}"),
        )
    })?;
    // The compiler holds the workers' own engine too (pooling allocator), to check that a
    // module fits their instance slots; its slots reserve address space, which is counted
    // on top of the limit, not against it.
    let before = harden::address_space()?;
    let compiler = Compiler::new(metering).map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    let reserved = harden::address_space()?.saturating_sub(before);
    harden::limit_resources(Some(memory.saturating_add(reserved)))?;
    let mut bytes = Vec::new();
    std::io::stdin().lock().read_to_end(&mut bytes)?;
    seccomp::install(false)?;
    let reply = if instrument {
        match validate::instrument(&bytes) {
            Ok(instrumented) => validate::compile(&compiler, &instrumented),
            Err(reply) => reply,
        }
    } else {
        validate::compile(&compiler, &bytes)
    };
    let mut out = std::io::stdout().lock();
    protocol::write(&mut out, &reply)?;
    out.flush()
}
