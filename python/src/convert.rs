//! Python values to wasmpool inputs and outputs back: numbers for plain exports, JSON-able
//! values for SDK tasks, command specs and results.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use wasmpool::{
    CommandOutput, CommandSpec, ExportKind, Input, Limits, Module, Output, TaskError, Value,
};

/// How deep a JSON-able input may nest (a list inside itself would otherwise recurse forever).
const MAX_DEPTH: usize = 128;

fn bad_input(message: impl Into<String>) -> TaskError {
    // `TaskError::bad_input` is the crate's own; the variant is public.
    TaskError::BadInput {
        message: message.into(),
    }
}

/// The input of one call of `export` from Python positional and keyword arguments: numbers
/// for a plain export (checked against its signature by the pool), one JSON-able value for
/// an SDK task (or its keyword arguments as an object).
pub fn input(
    module: &Module,
    export: &str,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> Result<Input, TaskError> {
    let kwargs = kwargs.filter(|k| !k.is_empty());
    match module.export(export).map(|e| &e.kind) {
        Some(ExportKind::Task) => {
            let value = match (args.len(), kwargs) {
                (1, None) => json_of(&args.get_item(0).map_err(py_bad)?, 0)?,
                (0, Some(kw)) => json_of(kw.as_any(), 0)?,
                (0, None) => serde_json::Value::Null,
                (n, _) => {
                    return Err(bad_input(format!(
                    "the SDK task `{export}` takes one JSON-able argument (or keyword arguments \
                         as its object), {n} positional{} given",
                    if kwargs.is_some() {
                        " and keywords"
                    } else {
                        ""
                    }
                )))
                }
            };
            serde_json::to_vec(&value)
                .map(Input::Json)
                .map_err(|e| bad_input(format!("cannot encode input as JSON: {e}")))
        }
        _ => {
            if let Some(kw) = kwargs {
                let names: Vec<String> = kw.keys().iter().map(|k| k.to_string()).collect();
                return Err(bad_input(format!(
                    "`{export}` is a plain export: it takes numbers by position, not keyword \
                     arguments ({})",
                    names.join(", ")
                )));
            }
            let mut values = Vec::with_capacity(args.len());
            for (i, arg) in args.iter().enumerate() {
                values.push(number(&arg).ok_or_else(|| {
                    bad_input(format!(
                        "argument {} of `{export}` is {}; plain exports take numbers (int or float)",
                        i + 1,
                        type_name(&arg)
                    ))
                })??);
            }
            Ok(Input::Numbers(values))
        }
    }
}

fn py_bad(e: PyErr) -> TaskError {
    bad_input(e.to_string())
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    match obj.get_type().name() {
        Ok(n) => format!("a {n}"),
        Err(_) => "not a number".into(),
    }
}

/// A Python number as a wasm number: `None` when it is not a number; an error when an int
/// does not fit in 64 bits.
fn number(obj: &Bound<'_, PyAny>) -> Option<Result<Value, TaskError>> {
    if obj.is_instance_of::<PyInt>() {
        // bool is an int subclass: True is 1, as in Python arithmetic.
        if let Ok(x) = obj.extract::<i64>() {
            return Some(Ok(Value::I64(x)));
        }
        // Unsigned 64-bit values wrap the way wasm reinterprets them (as JSON inputs do).
        return Some(match obj.extract::<u64>() {
            Ok(x) => Ok(Value::I64(x as i64)),
            Err(_) => Err(bad_input(format!(
                "{} does not fit in a 64-bit integer",
                obj.str().map(|s| s.to_string()).unwrap_or_default()
            ))),
        });
    }
    if obj.is_instance_of::<PyFloat>() {
        return obj.extract::<f64>().ok().map(|x| Ok(Value::F64(x)));
    }
    None
}

/// A JSON-able Python value (None, bool, int, float, str, list, tuple, dict with str keys)
/// as JSON.
fn json_of(obj: &Bound<'_, PyAny>, depth: usize) -> Result<serde_json::Value, TaskError> {
    use serde_json::Value as J;
    if depth > MAX_DEPTH {
        return Err(bad_input(format!(
            "input nests deeper than {MAX_DEPTH} levels (does a list or dict contain itself?)"
        )));
    }
    if obj.is_none() {
        return Ok(J::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(J::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(x) = obj.extract::<i64>() {
            return Ok(J::from(x));
        }
        if let Ok(x) = obj.extract::<u64>() {
            return Ok(J::from(x));
        }
        return Err(bad_input("an int in the input does not fit in 64 bits"));
    }
    if obj.is_instance_of::<PyFloat>() {
        let x: f64 = obj.extract().map_err(py_bad)?;
        return serde_json::Number::from_f64(x)
            .map(J::Number)
            .ok_or_else(|| bad_input(format!("{x} is not a JSON number")));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(J::String(s.to_cow().map_err(py_bad)?.into_owned()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = serde_json::Map::new();
        for (k, v) in d.iter() {
            let Ok(k) = k.cast::<PyString>() else {
                return Err(bad_input(format!(
                    "a dict key in the input is {}; JSON object keys are str",
                    type_name(&k)
                )));
            };
            map.insert(
                k.to_cow().map_err(py_bad)?.into_owned(),
                json_of(&v, depth + 1)?,
            );
        }
        return Ok(J::Object(map));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for item in obj.try_iter().map_err(py_bad)? {
            items.push(json_of(&item.map_err(py_bad)?, depth + 1)?);
        }
        return Ok(J::Array(items));
    }
    Err(bad_input(format!(
        "the input holds {}, which is not JSON-able (None, bool, int, float, str, list, tuple, \
         dict)",
        type_name(obj)
    )))
}

/// JSON as Python values.
fn py_of_json<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => py.None().into_bound(py),
        J::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        J::String(s) => PyString::new(py, s).into_any(),
        J::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(py_of_json(py, item)?)?;
            }
            list.into_any()
        }
        J::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, py_of_json(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

fn py_of_value<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match *v {
        Value::I32(x) => x.into_pyobject(py)?.into_any(),
        Value::I64(x) => x.into_pyobject(py)?.into_any(),
        Value::F32(x) => (x as f64).into_pyobject(py)?.into_any(),
        Value::F64(x) => x.into_pyobject(py)?.into_any(),
        // `Value` is not exhaustive to this crate's eyes only in theory; every variant is above.
    })
}

/// A task's output as a Python value: `None`, a number or a tuple of them for plain exports,
/// the decoded JSON for SDK tasks, a [`CommandResult`] for commands. Output that does not
/// decode is a `BadOutput`.
pub fn output(py: Python<'_>, out: Output) -> Result<Py<PyAny>, OutputError> {
    match out {
        Output::Numbers(v) if v.is_empty() => Ok(py.None()),
        Output::Numbers(v) if v.len() == 1 => Ok(py_of_value(py, &v[0])?.unbind()),
        Output::Numbers(v) => {
            let items = v
                .iter()
                .map(|x| py_of_value(py, x))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyTuple::new(py, items)?.into_any().unbind())
        }
        Output::Json(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v) => Ok(py_of_json(py, &v)?.unbind()),
            Err(e) => Err(OutputError::Task(TaskError::BadOutput {
                message: format!("guest output is not valid JSON: {e}"),
            })),
        },
        Output::Command(out) => Ok(Py::new(py, CommandResult::from(out))?.into_any()),
        _ => Err(OutputError::Task(TaskError::BadOutput {
            message: "the call gave a batch where one result was expected".into(),
        })),
    }
}

/// Why an output did not become a Python value.
pub enum OutputError {
    Task(TaskError),
    Py(PyErr),
}

impl From<PyErr> for OutputError {
    fn from(e: PyErr) -> Self {
        OutputError::Py(e)
    }
}

/// What a WASI command run gave (`Pool.run_command`): its exit code, captured output and the
/// files it left in `/out`.
#[pyclass(module = "wasmpool", frozen, get_all)]
pub struct CommandResult {
    /// The program's exit code (0 when `_start` returned).
    exit_code: i32,
    /// What it wrote to stdout (bytes, up to the pool's cap).
    stdout: Py<PyBytes>,
    /// What it wrote to stderr (bytes, up to the pool's cap).
    stderr: Py<PyBytes>,
    /// The regular files it left in `/out`: path relative to `/out` → bytes.
    files: Py<PyDict>,
    /// Whether stdout or stderr went over its cap and was cut.
    output_truncated: bool,
    /// Fuel used (0 without a fuel limit).
    fuel_used: u64,
    /// Seconds from instantiation to exit, in the worker.
    duration: f64,
}

impl From<CommandOutput> for CommandResult {
    fn from(out: CommandOutput) -> Self {
        Python::attach(|py| {
            let files = PyDict::new(py);
            for f in &out.files {
                // Setting a str key and bytes value into a fresh dict cannot fail.
                let _ = files.set_item(&f.path, PyBytes::new(py, &f.data));
            }
            CommandResult {
                exit_code: out.exit_code,
                stdout: PyBytes::new(py, &out.stdout).unbind(),
                stderr: PyBytes::new(py, &out.stderr).unbind(),
                files: files.unbind(),
                output_truncated: out.output_truncated,
                fuel_used: out.fuel_used,
                duration: out.duration.as_secs_f64(),
            }
        })
    }
}

#[pymethods]
impl CommandResult {
    fn __repr__(&self, py: Python<'_>) -> String {
        let stdout = self.stdout.bind(py).as_bytes();
        let stderr = self.stderr.bind(py).as_bytes();
        format!(
            "CommandResult(exit_code={}, stdout=<{} bytes>, stderr=<{} bytes>, files={})",
            self.exit_code,
            stdout.len(),
            stderr.len(),
            self.files.bind(py).len()
        )
    }
}

/// A command run from its Python parts.
pub fn command_spec(
    args: Vec<String>,
    stdin: Vec<u8>,
    env: Vec<(String, String)>,
    files: Vec<(String, Vec<u8>)>,
    output_dir: bool,
    check: bool,
) -> CommandSpec {
    let mut spec = CommandSpec::new().args(args).stdin(stdin);
    for (k, v) in env {
        spec = spec.env(k, v);
    }
    for (path, data) in files {
        spec = spec.input(path, data);
    }
    if output_dir {
        spec = spec.output_dir();
    }
    if check {
        spec = spec.check();
    }
    spec
}

/// Per-call limits from Python: each of `fuel`, `timeout` (seconds), `memory` (bytes) is
/// left at the pool's default when absent from `spec`, unlimited when `None`.
pub fn limits(base: Limits, spec: Option<&Bound<'_, PyDict>>) -> PyResult<Limits> {
    let mut limits = base;
    let Some(spec) = spec else {
        return Ok(limits);
    };
    if let Some(v) = spec.get_item("fuel")? {
        limits.fuel = v.extract::<Option<u64>>()?;
    }
    if let Some(v) = spec.get_item("timeout")? {
        limits.timeout = seconds(v.extract::<Option<f64>>()?)?;
    }
    if let Some(v) = spec.get_item("memory")? {
        limits.memory = v.extract::<Option<u64>>()?;
    }
    Ok(limits)
}

/// Seconds from Python as a duration; an error for a negative, NaN or overlong value.
pub fn seconds(s: Option<f64>) -> PyResult<Option<Duration>> {
    s.map(|s| {
        Duration::try_from_secs_f64(s).map_err(|_| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "{s} is not a valid number of seconds (a finite number >= 0)"
            ))
        })
    })
    .transpose()
}
