//! Mounts (`PoolBuilder::mount`, `exec --mount`): a host directory seen by every command at a
//! guest path, read-only unless writable, and nothing beyond it — not through `..`, symbolic
//! links (the host's or the guest's) or hard links.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{builder, c_program};
use wasmpool::{CommandSpec, Mount, PoolError};

/// A directory tree for the tests, readable (and `shared` writable) by the workers' user:
/// `data/hello.txt`, `data/abs` → `<base>/secret`, `data/rel` → `../secret`, `secret`,
/// and an empty `shared`.
fn tree() -> tempfile::TempDir {
    let base = tempfile::tempdir().unwrap();
    let p = base.path();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(p.join("data")).unwrap();
    std::fs::create_dir(p.join("shared")).unwrap();
    std::fs::set_permissions(p.join("shared"), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(p.join("data/hello.txt"), "hello mount\n").unwrap();
    std::fs::write(p.join("secret"), "host secret\n").unwrap();
    std::os::unix::fs::symlink(p.join("secret"), p.join("data/abs")).unwrap();
    std::os::unix::fs::symlink("../secret", p.join("data/rel")).unwrap();
    base
}

/// Runs the probe with `ops` in a pool with `data` mounted read-only at `/data` and
/// `shared` writable at `/shared`; its output lines.
fn probe(base: &Path, ops: &[&str]) -> Vec<String> {
    let pool = builder()
        .workers(1)
        .mount(Mount::read_only(base.join("data"), "/data"))
        .mount(Mount::read_write(base.join("shared"), "/shared"))
        .build()
        .unwrap();
    let module = pool.load_file(c_program("mountprobe")).unwrap();
    let out = pool
        .run_command(&module, CommandSpec::new().args(ops.iter().copied()))
        .wait()
        .unwrap();
    assert_eq!(out.exit_code, 0, "{}", out.stderr_text());
    out.stdout_text().lines().map(str::to_string).collect()
}

fn assert_outcomes(lines: &[String], expected: &[(&str, bool)]) {
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
    for (line, (op, ok)) in lines.iter().zip(expected) {
        assert!(line.starts_with(&format!("{op}: ")), "{line} for {op}");
        assert_eq!(line.contains(": OK"), *ok, "{line}");
    }
}

#[test]
fn a_read_only_mount_is_read_and_listed_never_written() {
    let base = tree();
    let lines = probe(
        base.path(),
        &[
            "read:/data/hello.txt",
            "list:/data",
            "write:/data/new",
            "write:/data/hello.txt",
        ],
    );
    assert_outcomes(
        &lines,
        &[
            ("read:/data/hello.txt", true),
            ("list:/data", true),
            ("write:/data/new", false),
            ("write:/data/hello.txt", false),
        ],
    );
    assert!(lines[0].ends_with("OK hello mount"), "{}", lines[0]);
    assert!(!base.path().join("data/new").exists());
    assert_eq!(
        std::fs::read_to_string(base.path().join("data/hello.txt")).unwrap(),
        "hello mount\n"
    );
}

#[test]
fn dot_dot_does_not_leave_a_mount() {
    let base = tree();
    let ops = [
        "read:/data/../secret",
        "read:/data/../../secret",
        "read:/shared/../secret",
        "list:/data/..",
        "read:/secret",
    ];
    let lines = probe(base.path(), &ops);
    assert_outcomes(&lines, &ops.map(|op| (op, false)));
}

#[test]
fn symbolic_links_do_not_leave_a_mount() {
    let base = tree();
    // The host's links in the mount, and links the guest makes in the writable one.
    let ops = [
        ("read:/data/abs", false),
        ("read:/data/rel", false),
        ("symlink:../secret:/shared/up", true),
        ("read:/shared/up", false),
        // WASI refuses to make a link to an absolute path (and would not follow one).
        ("symlink:/data/../secret:/shared/abs", false),
        ("read:/shared/abs", false),
        ("symlink:/data/hello.txt:/shared/across", false),
        ("read:/shared/across", false),
    ];
    let lines = probe(base.path(), &ops.map(|(op, _)| op));
    assert_outcomes(&lines, &ops);
}

#[test]
fn hard_links_do_not_leave_a_mount() {
    let base = tree();
    let ops = [
        // Out of the read-only mount, from outside any mount, into the read-only mount.
        ("link:/data/hello.txt:/shared/hello", false),
        ("link:/shared/../secret:/shared/secret", false),
        ("write:/shared/mine", true),
        ("link:/shared/mine:/data/mine", false),
        // Within the writable mount it is the guest's own business.
        ("link:/shared/mine:/shared/mine2", true),
    ];
    let lines = probe(base.path(), &ops.map(|(op, _)| op));
    assert_outcomes(&lines, &ops);
    assert_eq!(
        std::fs::metadata(base.path().join("secret"))
            .unwrap()
            .nlink(),
        1
    );
    assert_eq!(
        std::fs::metadata(base.path().join("data/hello.txt"))
            .unwrap()
            .nlink(),
        1
    );
    assert!(!base.path().join("shared/hello").exists());
    assert!(!base.path().join("data/mine").exists());
}

#[test]
fn a_writable_mount_is_shared_by_the_pools_runs() {
    let base = tree();
    let lines = probe(base.path(), &["write:/shared/note", "read:/shared/note"]);
    assert_outcomes(
        &lines,
        &[("write:/shared/note", true), ("read:/shared/note", true)],
    );
    assert_eq!(
        std::fs::read_to_string(base.path().join("shared/note")).unwrap(),
        "written"
    );
}

#[test]
fn mounts_that_cannot_be_are_refused_when_the_pool_is_built() {
    let base = tree();
    let refused = |m: Mount| match builder().mount(m).build() {
        Err(PoolError::Config(message)) => message,
        other => panic!("{other:?}"),
    };
    let file = refused(Mount::read_only(base.path().join("data/hello.txt"), "/d"));
    assert!(
        file.contains("not a directory") && file.contains("preopens"),
        "{file}"
    );
    assert!(refused(Mount::read_only(base.path().join("nope"), "/d")).contains("nope"));
    assert!(refused(Mount::read_only(base.path().join("data"), "/in")).contains("/in"));
    assert!(refused(Mount::read_only(base.path().join("data"), "data")).contains("absolute"));
}

#[test]
fn exec_mount_on_the_command_line() {
    let base = tree();
    let data = format!("{}:/data", base.path().join("data").display());
    let out = common::wasmpool(
        &[
            "exec",
            "--mount",
            &data,
            c_program("mountprobe").to_str().unwrap(),
            "--",
            "read:/data/hello.txt",
            "write:/data/x",
        ],
        "",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("read:/data/hello.txt: OK hello mount"),
        "{stdout}"
    );
    assert!(stdout.contains("write:/data/x: denied"), "{stdout}");
    let file = format!("{}:/d", base.path().join("data/hello.txt").display());
    let out = common::wasmpool(&["exec", "--mount", &file, "x.wasm"], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("not a directory"), "{stderr}");
}
