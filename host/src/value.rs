//! Values that cross into and out of guests: numbers for plain exports, JSON for SDK tasks,
//! and the conversions from Rust types ([`Args`]) and back ([`FromOutput`]).

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::command::{CommandInput, CommandOutput};
use crate::error::TaskError;

/// A WebAssembly number: the argument and result type of plain exports.
///
/// ```
/// use wasmpool::{Value, ValType};
/// assert_eq!(Value::I32(7).coerce(ValType::I64), Some(Value::I64(7)));
/// assert_eq!(Value::F64(1.5).coerce(ValType::I32), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
}

/// The type of a [`Value`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ValType {
    I32,
    I64,
    F32,
    F64,
}

impl std::fmt::Display for ValType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ValType::I32 => "i32",
            ValType::I64 => "i64",
            ValType::F32 => "f32",
            ValType::F64 => "f64",
        })
    }
}

impl Value {
    /// The value's type.
    pub fn ty(&self) -> ValType {
        match self {
            Value::I32(_) => ValType::I32,
            Value::I64(_) => ValType::I64,
            Value::F32(_) => ValType::F32,
            Value::F64(_) => ValType::F64,
        }
    }

    /// Converts to `ty` when no information is lost (an integer that fits, an integral float,
    /// a float that is exactly representable); `None` otherwise.
    pub fn coerce(self, ty: ValType) -> Option<Value> {
        const F64_EXACT: i64 = 1 << 53;
        const F32_EXACT: i64 = 1 << 24;
        let as_int = |v: Value| -> Option<i64> {
            match v {
                Value::I32(x) => Some(x as i64),
                Value::I64(x) => Some(x),
                Value::F32(x) => float_to_int(x as f64),
                Value::F64(x) => float_to_int(x),
            }
        };
        match (self, ty) {
            (v, t) if v.ty() == t => Some(v),
            (v, ValType::I32) => as_int(v)
                .and_then(|x| i32::try_from(x).ok())
                .map(Value::I32),
            (v, ValType::I64) => as_int(v).map(Value::I64),
            (Value::F32(x), ValType::F64) => Some(Value::F64(x as f64)),
            (Value::F64(x), ValType::F32) => {
                let y = x as f32;
                (y as f64 == x || x.is_nan()).then_some(Value::F32(y))
            }
            (v, ValType::F64) => as_int(v)
                .filter(|x| x.abs() <= F64_EXACT)
                .map(|x| Value::F64(x as f64)),
            (v, ValType::F32) => as_int(v)
                .filter(|x| x.abs() <= F32_EXACT)
                .map(|x| Value::F32(x as f32)),
        }
    }

    /// The value as JSON (a number; non-finite floats become strings such as `"NaN"`).
    pub fn to_json(&self) -> serde_json::Value {
        let float = |x: f64| {
            serde_json::Number::from_f64(x)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| serde_json::Value::String(x.to_string()))
        };
        match *self {
            Value::I32(x) => x.into(),
            Value::I64(x) => x.into(),
            Value::F32(x) => float(x as f64),
            Value::F64(x) => float(x),
        }
    }

    /// Reads a JSON number as a value of type `ty`.
    pub fn from_json(json: &serde_json::Value, ty: ValType) -> Option<Value> {
        let n = json.as_number()?;
        let v = if let Some(i) = n.as_i64() {
            Value::I64(i)
        } else if let Some(u) = n.as_u64() {
            // Large unsigned integers wrap into i64 the way wasm reinterprets them.
            Value::I64(u as i64)
        } else {
            Value::F64(n.as_f64()?)
        };
        v.coerce(ty)
    }
}

fn float_to_int(x: f64) -> Option<i64> {
    (x.fract() == 0.0 && x >= i64::MIN as f64 && x < i64::MAX as f64).then_some(x as i64)
}

macro_rules! value_from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for Value {
            fn from(x: $t) -> Value { Value::$v(x) }
        }
    )*};
}
value_from!(i32 => I32, i64 => I64, f32 => F32, f64 => F64);

/// Decodes the items of a batch, refusing a batch among them: batches are never nested, and
/// decoding is recursive, so a forged frame nesting batches a million deep would otherwise
/// overflow the decoding thread's stack (which aborts the process).
pub(crate) fn not_nested<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    use std::cell::Cell;
    thread_local!(static IN_BATCH: Cell<bool> = const { Cell::new(false) });
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            IN_BATCH.set(false);
        }
    }
    if IN_BATCH.replace(true) {
        return Err(serde::de::Error::custom("a batch inside a batch"));
    }
    let _leave = Leave;
    Vec::deserialize(d)
}

/// The input of one call, as it travels to the worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Input {
    /// Arguments of a plain numeric export.
    Numbers(Vec<Value>),
    /// The JSON-encoded input of an SDK task.
    Json(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A WASI command run (see [`CommandSpec`](crate::CommandSpec)).
    Command(CommandInput),
    /// Several calls of one export, run one after another by one worker; never nested.
    Batch {
        #[serde(deserialize_with = "not_nested")]
        items: Vec<Input>,
        instances: Instances,
    },
    /// The compact form of a `Batch` of plain numeric calls: `calls` calls, their arguments
    /// laid end to end (`values.len()` is `calls` × the export's parameter count). With
    /// `call_stats`, the answer carries each call's own stats (fuel, duration, output…).
    NumberBatch {
        calls: u32,
        values: Vec<Value>,
        instances: Instances,
        call_stats: bool,
    },
    /// Run a module's initializer and snapshot the instance it leaves (see
    /// [`Pool::load_initialized`](crate::Pool::load_initialized)); never a caller's input.
    Snapshot(Box<SnapshotInput>),
}

/// What a worker needs to take an initializer snapshot: the initializer as a reactor
/// command (`invoke` is the initializer's export, `argv` its arguments; no files, no stdin)
/// and the original module's bytes, which the snapshot rewrites. The task's module is the
/// original instrumented to export its memories and mutable globals (Wizer's
/// `instrument`), so the worker can read them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[doc(hidden)]
pub struct SnapshotInput {
    pub command: CommandInput,
    #[serde(with = "serde_bytes")]
    pub wasm: Vec<u8>,
}

/// How the calls of a batch get their instances.
///
/// ```
/// use wasmpool::{Input, Instances, Value};
/// let batch = Input::NumberBatch {
///     calls: 2,
///     values: vec![Value::I64(3), Value::I64(4)],
///     instances: Instances::Fresh,
///     call_stats: false,
/// };
/// assert_eq!(batch.calls(), 2);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Instances {
    /// Each call in a store and instance of its own, exactly as if it were a task of its
    /// own: the calls only travel together (what [`Call::map`](crate::Call::map) sends).
    Fresh,
    /// The calls share an instance until one fails
    /// ([`Call::reuse_instance`](crate::Call::reuse_instance)).
    Shared,
}

impl Input {
    /// How many calls this input makes.
    pub fn calls(&self) -> usize {
        match self {
            Input::Batch { items, .. } => items.len(),
            Input::NumberBatch { calls, .. } => *calls as usize,
            _ => 1,
        }
    }
}

/// The output of one call, as it travels back from the worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Output {
    /// Results of a plain numeric export.
    Numbers(Vec<Value>),
    /// The JSON-encoded output of an SDK task.
    Json(#[serde(with = "serde_bytes")] Vec<u8>),
    /// What a WASI command run produced.
    Command(CommandOutput),
    /// The outcome of each call of a [`Input::Batch`], in order; never nested.
    Batch(#[serde(deserialize_with = "not_nested")] Vec<Result<Output, TaskError>>),
    /// The outcome of a [`Input::NumberBatch`]: the results of the calls that succeeded,
    /// laid end to end in call order, and the calls that failed, by index (ascending);
    /// each call's stats, in call order, when the input asked for them (else none).
    NumberBatch {
        values: Vec<Value>,
        failures: Vec<(u32, TaskError)>,
        call_stats: Vec<crate::protocol::TaskStats>,
    },
    /// The initialized module an [`Input::Snapshot`] made (WebAssembly bytes).
    Snapshot(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl Output {
    /// The output as one JSON value: a number for one result, an array for several, `null`
    /// for none, the task's own JSON for SDK tasks.
    pub fn to_json(&self) -> Result<serde_json::Value, TaskError> {
        match self {
            Output::Numbers(v) if v.is_empty() => Ok(serde_json::Value::Null),
            Output::Numbers(v) if v.len() == 1 => Ok(v[0].to_json()),
            Output::Numbers(v) => Ok(v.iter().map(Value::to_json).collect()),
            Output::Json(bytes) => {
                serde_json::from_slice(bytes).map_err(|e| TaskError::BadOutput {
                    message: format!("guest output is not valid JSON: {e}"),
                })
            }
            Output::Batch(items) => Ok(items
                .iter()
                .map(|r| match r.as_ref().map_err(Clone::clone).and_then(Output::to_json) {
                    Ok(v) => serde_json::json!({ "ok": v }),
                    Err(e) => serde_json::json!({ "error": { "kind": e.kind(), "message": e.to_string() } }),
                })
                .collect()),
            Output::NumberBatch { values, failures, .. } => Ok(serde_json::json!({
                "values": values.iter().map(Value::to_json).collect::<Vec<_>>(),
                "failures": failures.iter().map(|(i, e)| serde_json::json!([i, e.kind(), e.to_string()])).collect::<Vec<_>>(),
            })),
            Output::Command(out) => Ok(serde_json::json!({
                "exit_code": out.exit_code,
                "stdout": String::from_utf8_lossy(&out.stdout),
                "stderr": String::from_utf8_lossy(&out.stderr),
                "files": out.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            })),
            Output::Snapshot(wasm) => Ok(serde_json::json!({ "snapshot_bytes": wasm.len() })),
        }
    }
}

/// Marks an SDK task's input or output: serialized with serde through the guest ABI.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use wasmpool::{Json, Pool};
/// let pool = Pool::builder().build()?;
/// let m = pool.load_file("guests/target/wasm32-wasip1/release/wordcount.wasm")?;
/// let out: Json<serde_json::Value> = pool
///     .submit(&m, "wordcount", Json(serde_json::json!({"text": "a b a"})))
///     .wait()?;
/// assert_eq!(out.0["words"], 3);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Json<T>(pub T);

/// Something that can be passed as the arguments of a call: numbers (a number, a tuple, an
/// array or a `Vec` of numbers) for plain exports, [`Json`] for SDK tasks.
pub trait Args {
    /// Converts into the wire input.
    fn into_input(self) -> Result<Input, TaskError>;

    /// Converts into the wire input for a call whose input may be at most `max_input`
    /// bytes ([`Limits::max_input`](crate::Limits)). Arguments that read something to make
    /// their input (a [`CommandSpec`](crate::CommandSpec)'s host files) read no more than
    /// that. The provided version is [`Args::into_input`].
    fn into_input_within(self, max_input: usize) -> Result<Input, TaskError>
    where
        Self: Sized,
    {
        let _ = max_input;
        self.into_input()
    }

    /// Appends the arguments to `out` if they are plain numbers, without allocating (how a
    /// `map` lays many calls' arguments end to end); otherwise hands back the input they
    /// make. The provided version goes through [`Args::into_input`].
    ///
    /// ```
    /// use wasmpool::{Args, Value};
    /// let mut flat = Vec::new();
    /// assert!((3i64, 4i64).push_numbers(&mut flat).is_ok());
    /// assert_eq!(flat, [Value::I64(3), Value::I64(4)]);
    /// ```
    fn push_numbers(self, out: &mut Vec<Value>) -> Result<(), Result<Input, TaskError>>
    where
        Self: Sized,
    {
        match self.into_input() {
            Ok(Input::Numbers(values)) => {
                out.extend(values);
                Ok(())
            }
            other => Err(other),
        }
    }
}

macro_rules! scalar_args {
    ($($t:ty),*) => {$(
        impl Args for $t {
            fn into_input(self) -> Result<Input, TaskError> {
                Ok(Input::Numbers(vec![self.into()]))
            }

            fn push_numbers(self, out: &mut Vec<Value>) -> Result<(), Result<Input, TaskError>> {
                out.push(self.into());
                Ok(())
            }
        }
    )*};
}
scalar_args!(i32, i64, f32, f64, Value);

impl Args for () {
    fn into_input(self) -> Result<Input, TaskError> {
        Ok(Input::Numbers(Vec::new()))
    }

    fn push_numbers(self, _: &mut Vec<Value>) -> Result<(), Result<Input, TaskError>> {
        Ok(())
    }
}

impl<V: Into<Value>> Args for Vec<V> {
    fn into_input(self) -> Result<Input, TaskError> {
        Ok(Input::Numbers(self.into_iter().map(Into::into).collect()))
    }
}

impl<V: Into<Value>, const N: usize> Args for [V; N] {
    fn into_input(self) -> Result<Input, TaskError> {
        Ok(Input::Numbers(self.into_iter().map(Into::into).collect()))
    }

    fn push_numbers(self, out: &mut Vec<Value>) -> Result<(), Result<Input, TaskError>> {
        out.extend(self.into_iter().map(Into::into));
        Ok(())
    }
}

macro_rules! tuple_args {
    ($($name:ident)+) => {
        impl<$($name: Into<Value>),+> Args for ($($name,)+) {
            #[allow(non_snake_case)]
            fn into_input(self) -> Result<Input, TaskError> {
                let ($($name,)+) = self;
                Ok(Input::Numbers(vec![$($name.into()),+]))
            }

            #[allow(non_snake_case)]
            fn push_numbers(self, out: &mut Vec<Value>) -> Result<(), Result<Input, TaskError>> {
                let ($($name,)+) = self;
                $(out.push($name.into());)+
                Ok(())
            }
        }
    };
}
tuple_args!(A);
tuple_args!(A B);
tuple_args!(A B C);
tuple_args!(A B C D);
tuple_args!(A B C D E);
tuple_args!(A B C D E F);

impl<T: Serialize> Args for Json<T> {
    fn into_input(self) -> Result<Input, TaskError> {
        serde_json::to_vec(&self.0)
            .map(Input::Json)
            .map_err(|e| TaskError::bad_input(format!("cannot encode input as JSON: {e}")))
    }
}

impl Args for Input {
    fn into_input(self) -> Result<Input, TaskError> {
        Ok(self)
    }
}

/// Something a call's output converts into: a number or tuple of numbers for plain exports,
/// [`Json`] for SDK tasks, or the raw [`Output`].
pub trait FromOutput: Sized {
    /// Converts from the wire output.
    fn from_output(output: Output) -> Result<Self, TaskError>;

    /// Converts the results of one plain numeric call (batches use this, without building
    /// an `Output` per call).
    fn from_values(values: &[Value]) -> Result<Self, TaskError> {
        Self::from_output(Output::Numbers(values.to_vec()))
    }
}

fn numbers(output: Output, want: usize) -> Result<Vec<Value>, TaskError> {
    match output {
        Output::Numbers(v) if v.len() == want => Ok(v),
        Output::Numbers(v) => Err(TaskError::BadOutput {
            message: format!(
                "the export returned {} value(s), the caller expected {want}",
                v.len()
            ),
        }),
        Output::Json(_) => Err(TaskError::BadOutput {
            message: "the export is an SDK task returning JSON; ask for Json<T> instead of numbers"
                .into(),
        }),
        Output::Command(_) => Err(TaskError::BadOutput {
            message: "the call was a command run; ask for a CommandOutput instead of numbers"
                .into(),
        }),
        Output::Batch(_) | Output::NumberBatch { .. } => Err(TaskError::BadOutput {
            message: "the call was a batch; its results are per call".into(),
        }),
        Output::Snapshot(_) => Err(TaskError::BadOutput {
            message: "the task was an initializer snapshot, not a call".into(),
        }),
    }
}

macro_rules! number_output {
    ($($t:ty => $v:ident),*) => {$(
        impl FromOutput for $t {
            fn from_output(output: Output) -> Result<Self, TaskError> {
                Self::from_values(&numbers(output, 1)?)
            }

            fn from_values(values: &[Value]) -> Result<Self, TaskError> {
                let &[v] = values else {
                    return Err(TaskError::BadOutput {
                        message: format!("the export returned {} value(s), the caller expected 1", values.len()),
                    });
                };
                match v.coerce(ValType::$v) {
                    Some(Value::$v(x)) => Ok(x),
                    _ => Err(TaskError::BadOutput {
                        message: format!("the export returned {:?}, which does not convert to {}", v, stringify!($t)),
                    }),
                }
            }
        }
    )*};
}
number_output!(i32 => I32, i64 => I64, f32 => F32, f64 => F64);

impl FromOutput for () {
    fn from_output(output: Output) -> Result<Self, TaskError> {
        numbers(output, 0).map(drop)
    }
}

impl FromOutput for Value {
    fn from_output(output: Output) -> Result<Self, TaskError> {
        Ok(numbers(output, 1)?[0])
    }
}

impl FromOutput for Vec<Value> {
    fn from_output(output: Output) -> Result<Self, TaskError> {
        match output {
            Output::Numbers(v) => Ok(v),
            other => numbers(other, 0),
        }
    }
}

impl FromOutput for Output {
    fn from_output(output: Output) -> Result<Self, TaskError> {
        Ok(output)
    }
}

impl FromOutput for serde_json::Value {
    fn from_output(output: Output) -> Result<Self, TaskError> {
        output.to_json()
    }
}

impl<T: DeserializeOwned> FromOutput for Json<T> {
    fn from_output(output: Output) -> Result<Self, TaskError> {
        match output {
            Output::Json(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Json)
                    .map_err(|e| TaskError::BadOutput {
                        message: format!("cannot decode the guest's JSON output: {e}"),
                    })
            }
            other => {
                let json = other.to_json()?;
                serde_json::from_value(json)
                    .map(Json)
                    .map_err(|e| TaskError::BadOutput {
                        message: format!("cannot decode the call's output: {e}"),
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coerce_keeps_information() {
        assert_eq!(Value::I64(1 << 40).coerce(ValType::I32), None);
        assert_eq!(Value::I64(-5).coerce(ValType::I32), Some(Value::I32(-5)));
        assert_eq!(Value::F64(3.0).coerce(ValType::I64), Some(Value::I64(3)));
        assert_eq!(Value::F64(0.1).coerce(ValType::F32), None);
        assert_eq!(Value::F32(0.5).coerce(ValType::F64), Some(Value::F64(0.5)));
        assert_eq!(Value::I64((1 << 53) + 1).coerce(ValType::F64), None);
    }

    #[test]
    fn json_numbers_read_as_types() {
        let j = serde_json::json!(42);
        assert_eq!(Value::from_json(&j, ValType::F32), Some(Value::F32(42.0)));
        assert_eq!(
            Value::from_json(&serde_json::json!(2.5), ValType::I32),
            None
        );
        assert_eq!(
            Value::from_json(&serde_json::json!("7"), ValType::I32),
            None
        );
    }

    #[test]
    fn args_and_outputs_convert() {
        assert_eq!(
            (1i32, 2i64).into_input().unwrap(),
            Input::Numbers(vec![Value::I32(1), Value::I64(2)])
        );
        assert_eq!(
            i64::from_output(Output::Numbers(vec![Value::I64(9)])),
            Ok(9)
        );
        assert!(i32::from_output(Output::Numbers(vec![Value::I64(1 << 40)])).is_err());
        let j: Json<Vec<u32>> = Json::from_output(Output::Json(b"[1,2]".to_vec())).unwrap();
        assert_eq!(j.0, vec![1, 2]);
    }
}
