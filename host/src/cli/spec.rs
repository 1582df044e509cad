//! A command run as JSON: one line of `wasmpool exec --specs` and the body of
//! `wasmpool serve`'s `POST /v1/modules/{id}/exec` are the same object, [`SpecLine`]
//! (the program's arguments, stdin, environment, `/in` files, `/out`, and its own limits in
//! the JSON form of [`Limits`], a unit in every name).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use wasmpool::{CommandSpec, Limits};

/// One command run: a `--specs` line or an `exec` request body.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SpecLine {
    pub args: Vec<String>,
    pub argv0: Option<String>,
    /// The program's stdin as text…
    pub stdin: String,
    /// …or as base64 (for bytes that are not UTF-8); not both.
    pub stdin_base64: Option<String>,
    pub env: BTreeMap<String, String>,
    /// `/in/<name>` → its contents, or (`--specs` only) a host path.
    pub inputs: BTreeMap<String, SpecInput>,
    pub output_dir: bool,
    pub check: bool,
    /// This run's limits, in the JSON form of `Limits` (a unit in every name); a field
    /// left out is the pool's; `null` is unlimited where `Limits` allows `None`.
    #[serde(deserialize_with = "present")]
    pub fuel: Option<Option<u64>>,
    #[serde(deserialize_with = "present")]
    pub timeout_ms: Option<Option<u64>>,
    #[serde(deserialize_with = "present")]
    pub memory_bytes: Option<Option<u64>>,
    pub stdout_cap_bytes: Option<u32>,
    pub stderr_cap_bytes: Option<u32>,
    pub max_input_bytes: Option<u32>,
    pub max_output_bytes: Option<u32>,
}

/// The contents of one `/in` file.
#[derive(Deserialize, Debug, PartialEq, Eq)]
#[serde(
    untagged,
    expecting = "an input file: a host path (\"data/x.txt\", --specs only), {\"text\": \"...\"} or {\"base64\": \"...\"}"
)]
pub enum SpecInput {
    /// A file of the host, read when the run starts.
    Path(PathBuf),
    Text {
        text: String,
    },
    Base64 {
        base64: String,
    },
}

/// Whether a spec may name host files (`--specs`, the user's own machine) or not (a
/// request to the service, whose host files are none of the client's business).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum HostFiles {
    Allowed,
    Refused,
}

/// A field that is present (`Some`, holding `None` for `null`), as opposed to left out.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn base64_bytes(what: &str, text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("{what} is not valid base64: {e}"))
}

impl SpecLine {
    /// `defaults` with this line's limits over them, or `None` when it sets none.
    pub fn limits(&self, defaults: Limits) -> Option<Limits> {
        let set = self.fuel.is_some()
            || self.timeout_ms.is_some()
            || self.memory_bytes.is_some()
            || self.stdout_cap_bytes.is_some()
            || self.stderr_cap_bytes.is_some()
            || self.max_input_bytes.is_some()
            || self.max_output_bytes.is_some();
        set.then(|| Limits {
            fuel: self.fuel.unwrap_or(defaults.fuel),
            timeout: self
                .timeout_ms
                .map_or(defaults.timeout, |t| t.map(Duration::from_millis)),
            memory: self.memory_bytes.unwrap_or(defaults.memory),
            stdout_cap: self.stdout_cap_bytes.unwrap_or(defaults.stdout_cap),
            stderr_cap: self.stderr_cap_bytes.unwrap_or(defaults.stderr_cap),
            max_input: self.max_input_bytes.unwrap_or(defaults.max_input),
            max_output: self.max_output_bytes.unwrap_or(defaults.max_output),
        })
    }

    /// `base` with this line's arguments, stdin, environment, files and flags; a host path
    /// among the inputs is refused unless `host_files` allows it.
    pub fn apply(self, base: CommandSpec, host_files: HostFiles) -> Result<CommandSpec, String> {
        let stdin = match self.stdin_base64 {
            Some(_) if !self.stdin.is_empty() => {
                return Err("give `stdin` or `stdin_base64`, not both".into())
            }
            Some(b64) => base64_bytes("stdin_base64", &b64)?,
            None => self.stdin.into_bytes(),
        };
        let mut spec = base.args(self.args).stdin(stdin);
        if let Some(argv0) = self.argv0 {
            spec.argv0 = Some(argv0);
        }
        spec.env.extend(self.env);
        for (name, input) in self.inputs {
            spec = match input {
                SpecInput::Path(host) if host_files == HostFiles::Allowed => {
                    spec.input_file(name, host)
                }
                SpecInput::Path(_) => {
                    return Err(format!(
                        "input `{name}`: host paths are not taken here; send the file's \
                         contents as {{\"text\": \"...\"}} or {{\"base64\": \"...\"}}"
                    ))
                }
                SpecInput::Text { text } => spec.input(name, text.into_bytes()),
                SpecInput::Base64 { base64 } => {
                    let bytes = base64_bytes(&format!("input `{name}`"), &base64)?;
                    spec.input(name, bytes)
                }
            };
        }
        spec.output_dir |= self.output_dir;
        spec.check = self.check;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmpool::InputSource;

    fn parse(text: &str) -> SpecLine {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn inputs_are_paths_text_or_base64_and_paths_only_where_allowed() {
        let line = r#"{"args": ["a"], "stdin_base64": "AAE=", "inputs": {"p": "x/y.txt", "t": {"text": "hi"}, "b": {"base64": "/w=="}}}"#;
        let spec = parse(line)
            .apply(CommandSpec::new(), HostFiles::Allowed)
            .unwrap();
        assert_eq!(spec.args, ["a"]);
        assert_eq!(spec.stdin, [0, 1]);
        let source = |n: &str| &spec.inputs.iter().find(|f| f.path == n).unwrap().source;
        assert_eq!(source("t"), &InputSource::Bytes(b"hi".to_vec()));
        assert_eq!(source("b"), &InputSource::Bytes(vec![0xff]));
        assert_eq!(source("p"), &InputSource::Path("x/y.txt".into()));
        let refused = parse(line)
            .apply(CommandSpec::new(), HostFiles::Refused)
            .unwrap_err();
        assert!(
            refused.contains("input `p`: host paths are not taken"),
            "{refused}"
        );
        let e = parse(r#"{"inputs": {"b": {"base64": "!!"}}}"#)
            .apply(CommandSpec::new(), HostFiles::Refused)
            .unwrap_err();
        assert!(e.contains("input `b` is not valid base64"), "{e}");
        let e = parse(r#"{"stdin": "x", "stdin_base64": "eA=="}"#)
            .apply(CommandSpec::new(), HostFiles::Refused)
            .unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = serde_json::from_str::<SpecLine>(r#"{"inputs": {"a": 7}}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("an input file"), "{e}");
    }
}
