//! [`TaskSpec`]: one task's sandbox as data — its limits, its retries and, for a WASI
//! command, what it runs with — in one validated, serde-able description shared by the
//! library ([`Call::spec`](crate::Call::spec), [`CommandCall::spec`](crate::CommandCall::spec),
//! [`Pool::run_spec`](crate::Pool::run_spec)), `wasmpool exec --specs` and the service.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::command::{relative_path, CommandSpec, InputFile, InputSource};
use crate::limits::{LimitError, Limits};

/// One task's sandbox and, for a WASI command, what it runs with: each limit over the
/// pool's default (a limit left out is the pool's), how many times it is re-run after
/// losing its worker, and the command's argv, stdin, environment and files.
///
/// Made with the builder methods or from JSON; either way it is checked once, where it is
/// made ([`TaskSpec::validate`] runs inside deserialization), and an invalid one is refused
/// naming the JSON key at fault.
///
/// ```
/// use std::time::Duration;
/// use wasmpool::{Limits, TaskSpec};
///
/// let spec = TaskSpec::from_json(
///     r#"{"timeout_ms": 500, "fuel": null, "max_retries": 1,
///         "args": ["-n"], "stdin": "to be or not to be\n",
///         "inputs": {"a.txt": {"text": "hello"}, "b.bin": {"base64": "AAEC"}}}"#,
/// )?;
/// let limits = spec.limits_over(Limits::default())?;
/// assert_eq!(limits.timeout, Some(Duration::from_millis(500)));
/// assert_eq!(limits.fuel, None); // `null`: unlimited
/// assert_eq!(limits.memory, Limits::default().memory); // left out: the pool's
/// assert_eq!(spec.max_retries, Some(1));
/// assert_eq!(spec.command.args, ["-n"]);
///
/// // Out of range: refused where it is read, naming the key.
/// let err = TaskSpec::from_json(r#"{"timeout_ms": 18446744073709551615}"#).unwrap_err();
/// assert!(err.to_string().contains("timeout_ms"), "{err}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The JSON form (every key optional; unknown keys are refused):
///
/// | key | value |
/// |---|---|
/// | `fuel`, `timeout_ms`, `memory_bytes` | a number, or `null` for unlimited |
/// | `stdout_cap_bytes`, `stderr_cap_bytes`, `max_input_bytes`, `max_output_bytes` | a number |
/// | `max_retries` | a number |
/// | `argv0` | a string |
/// | `invoke` | a reactor's export to run instead of `_start` (see [`CommandSpec::invoke`]) |
/// | `stdin_as_argument` | with `invoke`: the allocator export through which stdin is passed to it as `(pointer, length)` (see [`CommandSpec::stdin_as_argument`]) |
/// | `args` | an array of strings |
/// | `stdin` | a string (its UTF-8 bytes), or `{"base64": "…"}` |
/// | `env` | an object of strings, kept in order |
/// | `inputs` | an object: file name under `/in` → `{"text": "…"}`, `{"base64": "…"}`, `{"path": "host path"}`, or a string (a host path) |
/// | `output_dir`, `check` | `true` or `false` |
///
/// Host paths are read when the task is submitted, by the submitting process; a service
/// that takes specs from others refuses them first ([`TaskSpec::reads_host_files`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskSpec {
    limits: Overrides,
    /// Re-runs after a lost worker; `None`: the pool's or the call's.
    pub max_retries: Option<u32>,
    /// What a command runs with (argv, stdin, environment, files); unused by a plain or SDK
    /// call.
    pub command: CommandSpec,
}

/// Limits a spec sets, each over a default; `None` leaves the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Overrides {
    fuel: Option<Option<u64>>,
    timeout: Option<Option<Duration>>,
    memory: Option<Option<u64>>,
    stdout_cap: Option<u32>,
    stderr_cap: Option<u32>,
    max_input: Option<u32>,
    max_output: Option<u32>,
}

/// A [`TaskSpec`] that is not valid: bad JSON, an unknown key, a value of the wrong type
/// or out of its range. The message names the JSON key at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(String);

impl TaskSpec {
    /// A spec that sets nothing: the pool's limits and retries, a command with no arguments.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads and checks a spec in its JSON form (see [`TaskSpec`]).
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        serde_json::from_str(text).map_err(|e| SpecError(e.to_string()))
    }

    /// The JSON form; bytes that are UTF-8 are written as text, others as base64.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a TaskSpec always serializes to JSON")
    }

    /// Fuel per task; `None` for unlimited.
    pub fn fuel(mut self, fuel: impl Into<Option<u64>>) -> Self {
        self.limits.fuel = Some(fuel.into());
        self
    }

    /// Wall-clock limit per task; `None` for unlimited.
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.limits.timeout = Some(timeout.into());
        self
    }

    /// Memory limit per task, in bytes; `None` for the wasm32 maximum.
    pub fn memory(mut self, bytes: impl Into<Option<u64>>) -> Self {
        self.limits.memory = Some(bytes.into());
        self
    }

    /// Captured stdout kept per task, in bytes.
    pub fn stdout_cap(mut self, bytes: u32) -> Self {
        self.limits.stdout_cap = Some(bytes);
        self
    }

    /// Captured stderr kept per task, in bytes.
    pub fn stderr_cap(mut self, bytes: u32) -> Self {
        self.limits.stderr_cap = Some(bytes);
        self
    }

    /// Largest input a task takes, in bytes.
    pub fn max_input(mut self, bytes: u32) -> Self {
        self.limits.max_input = Some(bytes);
        self
    }

    /// Largest output a task returns, in bytes.
    pub fn max_output(mut self, bytes: u32) -> Self {
        self.limits.max_output = Some(bytes);
        self
    }

    /// Every limit of `limits`, each one set (over any default).
    pub fn limits(self, limits: Limits) -> Self {
        self.fuel(limits.fuel)
            .timeout(limits.timeout)
            .memory(limits.memory)
            .stdout_cap(limits.stdout_cap)
            .stderr_cap(limits.stderr_cap)
            .max_input(limits.max_input)
            .max_output(limits.max_output)
    }

    /// The limits of `limits` that differ from [`Limits::default`], each one set; the others
    /// left out (so `limits_over(Limits::default())` is `limits` again, in fewer bytes of
    /// JSON: a remote task's spec).
    #[cfg(feature = "nats")]
    pub(crate) fn limits_over_default(mut self, limits: Limits) -> Self {
        let d = Limits::default();
        let o = &mut self.limits;
        o.fuel = (limits.fuel != d.fuel).then_some(limits.fuel);
        o.timeout = (limits.timeout != d.timeout).then_some(limits.timeout);
        o.memory = (limits.memory != d.memory).then_some(limits.memory);
        o.stdout_cap = (limits.stdout_cap != d.stdout_cap).then_some(limits.stdout_cap);
        o.stderr_cap = (limits.stderr_cap != d.stderr_cap).then_some(limits.stderr_cap);
        o.max_input = (limits.max_input != d.max_input).then_some(limits.max_input);
        o.max_output = (limits.max_output != d.max_output).then_some(limits.max_output);
        self
    }

    /// How many times to re-run a task whose worker dies under it.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = Some(n);
        self
    }

    /// What a command runs with.
    pub fn command(mut self, command: CommandSpec) -> Self {
        self.command = command;
        self
    }

    /// The limits this spec sets, over `defaults` (a pool's, a call's), checked: a value
    /// out of its range is refused naming its JSON key.
    pub fn limits_over(&self, defaults: Limits) -> Result<Limits, SpecError> {
        let limits = self.over(defaults);
        limits.validate().map_err(json_limit_error)?;
        Ok(limits)
    }

    /// The limits this spec sets, over `defaults`, unchecked (a call checks its limits when
    /// its tasks are submitted).
    pub(crate) fn over(&self, defaults: Limits) -> Limits {
        let o = &self.limits;
        Limits {
            fuel: o.fuel.unwrap_or(defaults.fuel),
            timeout: o.timeout.unwrap_or(defaults.timeout),
            memory: o.memory.unwrap_or(defaults.memory),
            stdout_cap: o.stdout_cap.unwrap_or(defaults.stdout_cap),
            stderr_cap: o.stderr_cap.unwrap_or(defaults.stderr_cap),
            max_input: o.max_input.unwrap_or(defaults.max_input),
            max_output: o.max_output.unwrap_or(defaults.max_output),
        }
    }

    /// Whether this spec sets any limit.
    pub fn sets_limits(&self) -> bool {
        self.limits != Overrides::default()
    }

    /// Whether running this spec reads files of the host (`inputs` given as host paths). A
    /// service taking specs from others refuses those.
    pub fn reads_host_files(&self) -> bool {
        self.command
            .inputs
            .iter()
            .any(|f| !matches!(f.source, InputSource::Bytes(_)))
    }

    /// Checks everything a spec holds against its valid range: each limit it sets (over the
    /// defaults), the environment's names, the input files' names (relative, no `..`, each
    /// once) and arguments without NUL bytes. Deserialization runs it, so a spec read from
    /// JSON is valid.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.limits_over(Limits::default())?;
        let bad = |m: String| Err(SpecError(m));
        let argv = self.command.argv0.iter().chain(&self.command.args);
        if let Some(a) = argv.clone().find(|a| a.contains('\0')) {
            return bad(format!("args: {a:?} contains a NUL byte"));
        }
        for (key, value) in &self.command.env {
            if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
                return bad(format!(
                    "env: {key:?} is not a valid variable (a name is non-empty, without `=` or NUL; no NUL in a value)"
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for file in &self.command.inputs {
            let path = relative_path(&file.path)
                .map_err(|why| SpecError(format!("inputs: {:?}: {why}", file.path)))?;
            if !seen.insert(path.clone()) {
                return bad(format!("inputs: {path:?} is given twice"));
            }
        }
        Ok(())
    }
}

/// A limit's error with the limit named by its JSON key.
fn json_limit_error(e: LimitError) -> SpecError {
    let key = match e.limit {
        "timeout" => "timeout_ms",
        "memory" => "memory_bytes",
        "stdout_cap" => "stdout_cap_bytes",
        "stderr_cap" => "stderr_cap_bytes",
        "max_input" => "max_input_bytes",
        "max_output" => "max_output_bytes",
        other => other,
    };
    SpecError(format!("{key} {}", e.message))
}

// ---- the JSON form ----

/// Bytes as JSON: a string when they are UTF-8, else `{"base64": "…"}`; a string or
/// `{"text": "…"}` or `{"base64": "…"}` when read.
struct Data(Vec<u8>);

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("base64", &BASE64.encode(&self.0))?;
                m.end()
            }
        }
    }
}

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `{"text": …}`, `{"base64": …}` or `{"path": …}`: one key, its value a string.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum Tagged {
    Text(String),
    Base64(String),
    Path(PathBuf),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DataOrTagged {
    Plain(String),
    Tagged(Tagged),
}

fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    BASE64
        .decode(text.trim())
        .map_err(|e| format!("not valid base64: {e}"))
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match DataOrTagged::deserialize(d)
            .map_err(|_| de::Error::custom(r#"expected a string or {"base64": "…"}"#))?
        {
            DataOrTagged::Plain(text) | DataOrTagged::Tagged(Tagged::Text(text)) => {
                Ok(Data(text.into_bytes()))
            }
            DataOrTagged::Tagged(Tagged::Base64(b)) => {
                decode_base64(&b).map(Data).map_err(de::Error::custom)
            }
            DataOrTagged::Tagged(Tagged::Path(_)) => {
                Err(de::Error::custom("stdin cannot be a host path"))
            }
        }
    }
}

/// An input file's contents as JSON.
struct Source(InputSource);

impl Serialize for Source {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        match &self.0 {
            InputSource::Bytes(b) => match std::str::from_utf8(b) {
                Ok(text) => m.serialize_entry("text", text)?,
                Err(_) => m.serialize_entry("base64", &BASE64.encode(b))?,
            },
            InputSource::Path(p) | InputSource::PathNoFollow(p) => m.serialize_entry("path", p)?,
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match DataOrTagged::deserialize(d).map_err(|_| {
            de::Error::custom(
                r#"expected {"text": "…"}, {"base64": "…"}, {"path": "…"} or a host path"#,
            )
        })? {
            DataOrTagged::Plain(path) => Ok(Source(InputSource::Path(path.into()))),
            DataOrTagged::Tagged(Tagged::Path(path)) => Ok(Source(InputSource::Path(path))),
            DataOrTagged::Tagged(Tagged::Text(text)) => {
                Ok(Source(InputSource::Bytes(text.into_bytes())))
            }
            DataOrTagged::Tagged(Tagged::Base64(b)) => decode_base64(&b)
                .map(|b| Source(InputSource::Bytes(b)))
                .map_err(de::Error::custom),
        }
    }
}

/// A JSON object read in order, each key once.
struct Ordered<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Walk<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Walk<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered<V>, A::Error> {
                let mut out: Vec<(String, V)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(de::Error::custom(format!("{k:?} is given twice")));
                    }
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(Walk(std::marker::PhantomData))
    }
}

/// A field that is present (`Some`, holding `None` for `null`), as opposed to left out.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The JSON form, field by field.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Json {
    #[serde(deserialize_with = "present")]
    fuel: Option<Option<u64>>,
    #[serde(deserialize_with = "present")]
    timeout_ms: Option<Option<u64>>,
    #[serde(deserialize_with = "present")]
    memory_bytes: Option<Option<u64>>,
    stdout_cap_bytes: Option<u32>,
    stderr_cap_bytes: Option<u32>,
    max_input_bytes: Option<u32>,
    max_output_bytes: Option<u32>,
    max_retries: Option<u32>,
    argv0: Option<String>,
    invoke: Option<String>,
    stdin_as_argument: Option<String>,
    args: Vec<String>,
    stdin: Option<Data>,
    env: Option<Ordered<String>>,
    inputs: Option<Ordered<Source>>,
    output_dir: bool,
    check: bool,
}

impl<'de> Deserialize<'de> for TaskSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let j = Json::deserialize(d)?;
        let spec = TaskSpec {
            limits: Overrides {
                fuel: j.fuel,
                timeout: j.timeout_ms.map(|t| t.map(Duration::from_millis)),
                memory: j.memory_bytes,
                stdout_cap: j.stdout_cap_bytes,
                stderr_cap: j.stderr_cap_bytes,
                max_input: j.max_input_bytes,
                max_output: j.max_output_bytes,
            },
            max_retries: j.max_retries,
            command: CommandSpec {
                argv0: j.argv0,
                invoke: j.invoke,
                stdin_as_argument: j.stdin_as_argument,
                args: j.args,
                stdin: j.stdin.map(|d| d.0).unwrap_or_default(),
                env: j.env.map(|e| e.0).unwrap_or_default(),
                inputs: j
                    .inputs
                    .map(|i| i.0)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(path, source)| InputFile {
                        path,
                        source: source.0,
                    })
                    .collect(),
                output_dir: j.output_dir,
                check: j.check,
            },
        };
        spec.validate().map_err(de::Error::custom)?;
        Ok(spec)
    }
}

impl Serialize for TaskSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let o = &self.limits;
        let c = &self.command;
        let mut m = s.serialize_map(None)?;
        if let Some(fuel) = o.fuel {
            m.serialize_entry("fuel", &fuel)?;
        }
        if let Some(t) = o.timeout {
            let ms = t.map(|t| u64::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX));
            m.serialize_entry("timeout_ms", &ms)?;
        }
        if let Some(memory) = o.memory {
            m.serialize_entry("memory_bytes", &memory)?;
        }
        for (key, value) in [
            ("stdout_cap_bytes", o.stdout_cap),
            ("stderr_cap_bytes", o.stderr_cap),
            ("max_input_bytes", o.max_input),
            ("max_output_bytes", o.max_output),
            ("max_retries", self.max_retries),
        ] {
            if let Some(v) = value {
                m.serialize_entry(key, &v)?;
            }
        }
        if let Some(argv0) = &c.argv0 {
            m.serialize_entry("argv0", argv0)?;
        }
        if let Some(invoke) = &c.invoke {
            m.serialize_entry("invoke", invoke)?;
        }
        if let Some(alloc) = &c.stdin_as_argument {
            m.serialize_entry("stdin_as_argument", alloc)?;
        }
        if !c.args.is_empty() {
            m.serialize_entry("args", &c.args)?;
        }
        if !c.stdin.is_empty() {
            m.serialize_entry("stdin", &Data(c.stdin.clone()))?;
        }
        if !c.env.is_empty() {
            m.serialize_entry("env", &OrderedRef(&c.env))?;
        }
        if !c.inputs.is_empty() {
            let inputs: Vec<(String, Source)> = c
                .inputs
                .iter()
                .map(|f| (f.path.clone(), Source(f.source.clone())))
                .collect();
            m.serialize_entry("inputs", &OrderedRef(&inputs))?;
        }
        if c.output_dir {
            m.serialize_entry("output_dir", &true)?;
        }
        if c.check {
            m.serialize_entry("check", &true)?;
        }
        m.end()
    }
}

/// Pairs written as a JSON object, in order.
struct OrderedRef<'a, V>(&'a [(String, V)]);

impl<V: Serialize> Serialize for OrderedRef<'_, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_with_text_base64_and_paths() {
        let spec = TaskSpec::new()
            .fuel(None)
            .timeout(Duration::from_millis(250))
            .memory(1 << 20)
            .max_retries(2)
            .command(
                CommandSpec::new()
                    .argv0("py")
                    .invoke("run")
                    .stdin_as_argument("host_alloc")
                    .args(["-c", "print(1)"])
                    .stdin(vec![0xff, 0, 1])
                    .env("B", "2")
                    .env("A", "1")
                    .input("t.txt", "hello")
                    .input("b.bin", vec![0xfe, 0xff])
                    .input_file("h.txt", "/etc/hostname")
                    .output_dir()
                    .check(),
            );
        let json = spec.to_json();
        assert!(json.contains(r#""stdin":{"base64":"/wAB"}"#), "{json}");
        assert!(json.contains(r#""env":{"B":"2","A":"1"}"#), "{json}");
        assert!(json.contains(r#""t.txt":{"text":"hello"}"#), "{json}");
        assert!(
            json.contains(r#""h.txt":{"path":"/etc/hostname"}"#),
            "{json}"
        );
        assert!(json.contains(r#""fuel":null"#), "{json}");
        assert!(
            json.contains(r#""stdin_as_argument":"host_alloc""#),
            "{json}"
        );
        assert_eq!(TaskSpec::from_json(&json).unwrap(), spec);
        assert!(spec.reads_host_files());
    }

    #[test]
    fn left_out_limits_are_the_defaults_and_null_is_unlimited() {
        let defaults = Limits::default().with_fuel(Some(7));
        let spec = TaskSpec::from_json(r#"{"memory_bytes": null}"#).unwrap();
        let l = spec.limits_over(defaults).unwrap();
        assert_eq!(l.fuel, Some(7));
        assert_eq!(l.memory, None);
        assert!(spec.sets_limits());
        assert!(!TaskSpec::from_json("{}").unwrap().sets_limits());
    }

    #[test]
    fn invalid_specs_are_refused_naming_the_json_key() {
        for (text, key) in [
            (r#"{"timeout_ms": 18446744073709551615}"#, "timeout_ms"),
            (r#"{"timeout_ms": 0}"#, "timeout_ms"),
            (r#"{"memory_bytes": 4294967297}"#, "memory_bytes"),
            (r#"{"fuel": 0}"#, "fuel"),
            (r#"{"max_input_bytes": 0}"#, "max_input_bytes"),
            (r#"{"timeout": 5}"#, "unknown field `timeout`"),
            (r#"{"inputs": {"../x": {"text": ""}}}"#, "inputs"),
            (r#"{"inputs": {"a": "x", "./a": "y"}}"#, "given twice"),
            (r#"{"env": {"A=B": "1"}}"#, "env"),
            (r#"{"env": {"A": "1", "A": "2"}}"#, "given twice"),
            (r#"{"stdin": {"base64": "***"}}"#, "base64"),
            (r#"{"stdin": {"path": "/etc/passwd"}}"#, "stdin"),
            (
                r#"{"inputs": {"a": {"text": "x", "base64": "eA=="}}}"#,
                "expected",
            ),
            (r#"{"args": ["a\u0000b"]}"#, "NUL"),
            ("5", "invalid type"),
        ] {
            let err = TaskSpec::from_json(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn a_string_input_is_a_host_path_and_text_is_not() {
        let spec =
            TaskSpec::from_json(r#"{"inputs": {"a": "/tmp/x", "b": {"text": "y"}}}"#).unwrap();
        assert_eq!(
            spec.command.inputs[0].source,
            InputSource::Path("/tmp/x".into())
        );
        assert!(spec.reads_host_files());
        let spec = TaskSpec::from_json(r#"{"inputs": {"b": {"base64": "eQ=="}}}"#).unwrap();
        assert_eq!(
            spec.command.inputs[0].source,
            InputSource::Bytes(b"y".to_vec())
        );
        assert!(!spec.reads_host_files());
    }
}
