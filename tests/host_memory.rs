//! What a large input or output costs the host (finding 7 of the outside review): each test
//! bounds the peak resident memory of the host side, which used to be many times the
//! payload. Memory figures come from the kernel (`wait4`'s rusage, `/proc/self/status`), not
//! from timing.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{builder, guest_wat};
use wasmpool::{CommandSpec, Limits, OutputChunk};

const MIB: u64 = 1 << 20;

/// Runs the `wasmpool` binary with `args` and `stdin` (a file), and returns the file
/// holding its stdout and the peak resident memory of it and of every process it waited
/// for (its workers), in bytes. (The peak counts the moment between fork and exec too, when
/// the child still shares this process's pages: the tests here hold no large buffer.)
fn run_measured(args: &[&str], stdin: &Path) -> (tempfile::NamedTempFile, u64) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let child = common::cli()
        .args(args)
        .stdin(std::fs::File::open(stdin).unwrap())
        .stdout(out.reopen().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wasmpool");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for the kernel to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, which nothing else waits for (the handle is leaked
    // below, so its Drop does not reap it again); both pointers are valid for the call.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    std::mem::forget(child);
    (out, usage.ru_maxrss as u64 * 1024)
}

/// The first and last `n` bytes of a file, and its length.
fn ends(path: &Path, n: usize) -> (Vec<u8>, Vec<u8>, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut head = vec![0; n];
    f.read_exact(&mut head).unwrap();
    f.seek(SeekFrom::End(-(n as i64))).unwrap();
    let mut tail = vec![0; n];
    f.read_exact(&mut tail).unwrap();
    (head, tail, len)
}

#[test]
fn cli_run_writes_a_60mb_reply_of_small_numbers_without_building_it() {
    // An SDK task that answers `[1,1,…]`, 30 million ones (60 MB): the CLI used to build
    // it as a JSON tree (32 bytes a number) to print it — 1.9 GB.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n");
    std::fs::write(&input, "30000000\n").unwrap();
    let wat = guest_wat("ones_reply.wat");
    let (stdout, peak) = run_measured(
        &["run", wat.to_str().unwrap(), "ones", "--workers", "1"],
        &input,
    );
    let (head, tail, len) = ends(stdout.path(), 64);
    let head = String::from_utf8(head).unwrap();
    let digits = head[15..].bytes().take_while(u8::is_ascii_digit).count();
    assert!(head.starts_with(r#"{"duration_us":"#), "{head}");
    assert!(
        head[15 + digits..].starts_with(r#","fuel":0,"ok":[1,1,1,"#),
        "{head}"
    );
    assert!(tail.ends_with(b",1,1]}\n"));
    let frame = r#"{"duration_us":,"fuel":0,"ok":}"#.len() + digits + 1;
    assert_eq!(len as usize, 60_000_001 + frame);
    assert!(
        peak < 400 * MIB,
        "peak resident memory {} MiB for a 60 MB reply",
        peak / MIB
    );
}

#[test]
fn cli_run_refuses_a_100mb_line_without_holding_it() {
    // A 100 MB line of small numbers, over the 64 MiB input cap: it used to be parsed into
    // a JSON tree before the cap was checked — 1.7 GB.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("line");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        f.write_all(b"[").unwrap();
        let ones = "1,".repeat(1_000_000);
        for _ in 0..49 {
            f.write_all(ones.as_bytes()).unwrap();
        }
        f.write_all("1,".repeat(999_999).as_bytes()).unwrap();
        f.write_all(b"1]\n").unwrap();
    }
    assert_eq!(std::fs::metadata(&input).unwrap().len(), 100_000_002);
    let wasm = common::guest("wordcount");
    let (stdout, peak) = run_measured(
        &["run", wasm.to_str().unwrap(), "echo", "--workers", "1"],
        &input,
    );
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(stdout.path()).unwrap()).unwrap();
    assert_eq!(result["error"]["kind"], "bad_input", "{result}");
    assert!(result["error"]["message"]
        .as_str()
        .unwrap()
        .contains("100000001 bytes"));
    assert!(
        peak < 150 * MIB,
        "peak resident memory {} MiB to refuse a 100 MB line",
        peak / MIB
    );
}

#[test]
fn streamed_output_holds_the_program_when_the_reader_falls_behind() {
    // The program writes 64 MiB to stdout in 64 KiB writes. Nobody reads the stream while
    // we wait on the task: the channel fills and the program blocks in its write instead of
    // the host queueing its output without bound (it used to finish, 64 MiB queued).
    let pool = builder().workers(1).build().unwrap();
    let program = pool.load_file(guest_wat("write_loop.wat")).unwrap();
    let limits = Limits {
        stdout_cap: u32::MAX,
        timeout: Some(Duration::from_secs(60)),
        ..pool.limits()
    };
    let (task, output) = pool
        .command(&program)
        .limits(limits)
        .submit_streaming(CommandSpec::new());
    // A bounded wait for something that must *not* happen: the task cannot finish.
    assert!(task.wait_timeout(Duration::from_secs(2)).is_none());
    assert!(output.buffered() <= wasmpool::command::STREAM_CHUNKS);
    // Reading unblocks it: every byte arrives, in chunks no larger than the bound.
    let mut total = 0;
    for chunk in output {
        match chunk {
            OutputChunk::Stdout(b) => {
                assert!(b.len() <= wasmpool::command::STREAM_CHUNK_BYTES);
                total += b.len();
            }
            OutputChunk::Stderr(_) => panic!("nothing was written to stderr"),
        }
    }
    assert_eq!(total, 64 << 20);
    assert_eq!(task.wait().unwrap().exit_code, 0);
}
