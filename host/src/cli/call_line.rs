//! One call as a JSON line, shared by `wasmpool run` (a line per input) and `wasmpool serve`
//! (`call` answers with the same object, `map` streams the same lines): an input's JSON
//! into the call's [`Input`] for the export's kind, and a result into its line.

use std::io::Write;

use serde::Serialize;
use serde_json::{json, Value as JsonValue};
use wasmpool::{Args, ExportKind, FromOutput, Input, Output, TaskError, TaskStats, Value};

/// One line's arguments: a single number kept inline (no vector per line), or the input.
pub enum LineArgs {
    One(Value),
    Input(Input),
}

impl Args for LineArgs {
    fn into_input(self) -> Result<Input, TaskError> {
        match self {
            LineArgs::One(v) => Ok(Input::Numbers(vec![v])),
            LineArgs::Input(input) => Ok(input),
        }
    }

    fn push_numbers(self, out: &mut Vec<Value>) -> Result<(), Result<Input, TaskError>> {
        match self {
            LineArgs::One(v) => {
                out.push(v);
                Ok(())
            }
            LineArgs::Input(Input::Numbers(v)) => {
                out.extend(v);
                Ok(())
            }
            LineArgs::Input(other) => Err(Ok(other)),
        }
    }
}

/// [`to_input`] of a line not yet copied out of the reader's buffer: the common line of a
/// one-argument export, a JSON integer, is read without a JSON parse or an allocation.
pub fn to_args(kind: &ExportKind, line: &str) -> Result<LineArgs, String> {
    if let ExportKind::Numeric { params, .. } = kind {
        if let ([ty], Some(n)) = (params.as_slice(), json_integer(line)) {
            return one_number(n.into(), *ty)
                .map(LineArgs::One)
                .map_err(|m| format!("argument 1 {m}"));
        }
    }
    to_input(kind, line.to_string()).map(LineArgs::Input)
}

/// Converts one JSON line into the call's input for an export of `kind`.
pub fn to_input(kind: &ExportKind, line: String) -> Result<Input, String> {
    // Checked without building it: an SDK task gets the line's own bytes, a numeric call
    // only its numbers.
    serde_json::from_str::<serde::de::IgnoredAny>(&line)
        .map_err(|e| format!("not valid JSON: {e}"))?;
    match kind {
        ExportKind::Task => {
            let start = line.len() - line.trim_start().len();
            let end = line.trim_end().len();
            let mut bytes = line.into_bytes();
            bytes.truncate(end);
            bytes.drain(..start);
            Ok(Input::Json(bytes))
        }
        ExportKind::Numeric { params, .. } => {
            let numbers = numeric_args(&line, params.len())?;
            if numbers.len() != params.len() {
                return Err(format!(
                    "the export takes {} argument(s), the line has {}",
                    params.len(),
                    numbers.len()
                ));
            }
            numbers
                .into_iter()
                .zip(params)
                .enumerate()
                .map(|(i, (n, &ty))| {
                    one_number(n, ty).map_err(|m| format!("argument {} {m}", i + 1))
                })
                .collect::<Result<_, _>>()
                .map(Input::Numbers)
        }
        ExportKind::Unsupported { signature } => Err(format!(
            "the export's signature {signature} is not callable"
        )),
        other => Err(format!(
            "`run` cannot call an export of this kind ({other:?})"
        )),
    }
}

/// A JSON number as an argument of type `ty`, or why it cannot be one.
fn one_number(n: serde_json::Number, ty: wasmpool::ValType) -> Result<Value, String> {
    let j = JsonValue::Number(n);
    Value::from_json(&j, ty).ok_or_else(|| format!("({j}) is not a valid {ty}"))
}

/// The line as an integer if it is exactly a JSON integer that fits an `i64` (with JSON's
/// whitespace around it): `0|-?[1-9][0-9]*`; anything else (`-0`, `+1`, `01`, `1.0`, a
/// larger number) is left to the JSON parser.
fn json_integer(line: &str) -> Option<i64> {
    let t = line.trim_matches([' ', '\t', '\r', '\n']);
    let (negative, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d.as_bytes()),
        None => (false, t.as_bytes()),
    };
    let well_formed = match digits {
        // JSON's `-0` is a float (negative zero, for a float parameter).
        [b'0'] => !negative,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    well_formed.then(|| t.parse().ok()).flatten()
}

/// A numeric call's arguments: `null` (none), a number (one) or an array of numbers. The
/// parse stops at the first element past `max` or the first that is not a number, so a
/// line costs no more memory than its arguments, whatever it holds.
fn numeric_args(line: &str, max: usize) -> Result<Vec<serde_json::Number>, String> {
    use serde::de::{DeserializeSeed, Error, SeqAccess, Visitor};

    struct Args {
        max: usize,
    }
    impl<'de> DeserializeSeed<'de> for Args {
        type Value = Vec<serde_json::Number>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Args {
        type Value = Vec<serde_json::Number>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(
                f,
                "null, a number or an array of at most {} numbers",
                self.max
            )
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(vec![v.into()])
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(vec![v.into()])
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
            serde_json::Number::from_f64(v)
                .map(|n| vec![n])
                .ok_or_else(|| E::custom("not a finite number"))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut numbers = Vec::new();
            while let Some(n) = seq.next_element::<serde_json::Number>()? {
                if numbers.len() == self.max {
                    return Err(A::Error::custom(format_args!(
                        "the export takes {} argument(s), the line has more",
                        self.max
                    )));
                }
                numbers.push(n);
            }
            Ok(numbers)
        }
    }
    let mut de = serde_json::Deserializer::from_str(line);
    Args { max }
        .deserialize(&mut de)
        .and_then(|n| de.end().map(|()| n))
        .map_err(|e| e.to_string())
}

/// A call's result as `run` reads it: one number kept inline (no vector per call), or the
/// output.
pub enum Answer {
    One(Value),
    Output(Output),
}

impl FromOutput for Answer {
    fn from_output(output: Output) -> Result<Self, TaskError> {
        Ok(Answer::Output(output))
    }

    fn from_values(values: &[Value]) -> Result<Self, TaskError> {
        Ok(match values {
            [one] => Answer::One(*one),
            more => Answer::Output(Output::Numbers(more.to_vec())),
        })
    }
}

/// [`write_result_line`] of an [`Answer`].
pub fn write_answer_line(
    out: &mut dyn Write,
    result: Result<Answer, TaskError>,
    stats: &TaskStats,
) -> anyhow::Result<()> {
    match result {
        Ok(Answer::One(v)) => match integer_line(out, &v, stats) {
            Some(written) => written,
            None => write_result_line_serialized(out, Ok(Output::Numbers(vec![v])), stats),
        },
        Ok(Answer::Output(output)) => write_result_line(out, Ok(output), stats),
        Err(e) => write_result_line(out, Err(e), stats),
    }
}

/// The common line, one integer and no output, written without a serializer (the same
/// bytes as [`write_result_line_serialized`]: `result_lines_of_integers_are_the_serializers`);
/// `None` for any other.
fn integer_line(out: &mut dyn Write, v: &Value, stats: &TaskStats) -> Option<anyhow::Result<()>> {
    let n = match *v {
        Value::I32(n) => n as i64,
        Value::I64(n) => n,
        _ => return None,
    };
    if !(stats.stdout.is_empty() && stats.stderr.is_empty() && !stats.output_truncated) {
        return None;
    }
    Some(
        writeln!(
            out,
            r#"{{"duration_us":{},"fuel":{},"ok":{n}}}"#,
            stats.duration.as_micros() as u64,
            stats.fuel_used
        )
        .map_err(Into::into),
    )
}

/// Writes one result line. An SDK task's JSON output is copied token by token into the
/// line (validated first), never built as a tree: a 64 MiB reply of small numbers would
/// otherwise take gigabytes.
pub fn write_result_line(
    out: &mut dyn Write,
    result: Result<Output, TaskError>,
    stats: &TaskStats,
) -> anyhow::Result<()> {
    if let Ok(Output::Numbers(v)) = &result {
        if let [one] = v.as_slice() {
            if let Some(written) = integer_line(out, one, stats) {
                return written;
            }
        }
    }
    write_result_line_serialized(out, result, stats)
}

/// [`write_result_line`] through the serializer: any result.
fn write_result_line_serialized(
    out: &mut dyn Write,
    result: Result<Output, TaskError>,
    stats: &TaskStats,
) -> anyhow::Result<()> {
    let result = result.and_then(|output| match output {
        Output::Json(bytes) => serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
            .map(|_| Ok::<_, JsonValue>(bytes))
            .map_err(|e| TaskError::BadOutput {
                message: format!("guest output is not valid JSON: {e}"),
            }),
        other => other.to_json().map(Err),
    });
    let mut line = serde_json::Serializer::new(&mut *out);
    ResultLine {
        result: &result,
        stats,
    }
    .serialize(&mut line)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// A result line, keys in the order they always had (alphabetical).
struct ResultLine<'a> {
    /// `Ok(Ok(raw JSON))` for SDK output (validated), `Ok(Err(value))` for numbers.
    result: &'a Result<Result<Vec<u8>, JsonValue>, TaskError>,
    stats: &'a TaskStats,
}

impl serde::Serialize for ResultLine<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let stats = self.stats;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("duration_us", &(stats.duration.as_micros() as u64))?;
        if let Err(e) = self.result {
            m.serialize_entry(
                "error",
                &json!({ "kind": e.kind(), "message": e.to_string() }),
            )?;
        }
        m.serialize_entry("fuel", &stats.fuel_used)?;
        match self.result {
            Ok(Ok(raw)) => {
                let mut de = serde_json::Deserializer::from_slice(raw);
                m.serialize_entry("ok", &serde_transcode::Transcoder::new(&mut de))?;
            }
            Ok(Err(value)) => m.serialize_entry("ok", value)?,
            Err(_) => {}
        }
        if stats.output_truncated {
            m.serialize_entry("output_truncated", &true)?;
        }
        if !stats.stderr.is_empty() {
            m.serialize_entry("stderr", &String::from_utf8_lossy(&stats.stderr))?;
        }
        if !stats.stdout.is_empty() {
            m.serialize_entry("stdout", &String::from_utf8_lossy(&stats.stdout))?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmpool::ValType;

    fn s(line: &str) -> String {
        line.to_string()
    }

    #[test]
    fn lines_become_inputs_by_signature() {
        let k = ExportKind::Numeric {
            params: vec![ValType::I32, ValType::F64],
            results: vec![],
        };
        assert_eq!(
            to_input(&k, s("[1, 2.5]")),
            Ok(Input::Numbers(vec![Value::I32(1), Value::F64(2.5)]))
        );
        assert!(to_input(&k, s("[1]")).unwrap_err().contains("takes 2"));
        assert!(to_input(&k, s("[1, 2, 3]"))
            .unwrap_err()
            .contains("takes 2"));
        assert!(to_input(&k, s("[1.5, 2]"))
            .unwrap_err()
            .contains("not a valid i32"));
        assert!(to_input(&k, s("{oops"))
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(to_input(&k, s(r#"{"a": 1}"#))
            .unwrap_err()
            .contains("expected null, a number or an array of at most 2 numbers"));
        assert!(to_input(&k, s("[1, 2] x"))
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(to_input(&k, s(r#"[1, "2"]"#))
            .unwrap_err()
            .contains("invalid type"));
        let one = ExportKind::Numeric {
            params: vec![ValType::I64],
            results: vec![],
        };
        assert_eq!(
            to_input(&one, s("7")),
            Ok(Input::Numbers(vec![Value::I64(7)]))
        );
        assert_eq!(
            to_input(&ExportKind::Task, s(r#" {"a":1} "#)),
            Ok(Input::Json(br#"{"a":1}"#.to_vec()))
        );
        assert!(to_input(&ExportKind::Task, s("{oops"))
            .unwrap_err()
            .contains("not valid JSON"));
    }

    #[test]
    fn integer_lines_read_without_the_parser_read_as_with_it() {
        for line in [
            "0",
            "7",
            " -12 ",
            "\t42\r",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            let n = json_integer(line).unwrap_or_else(|| panic!("{line:?} is read"));
            let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(Some(n), parsed.as_i64(), "{line:?}");
        }
        // Not JSON integers (or not `i64`s): left to the parser, which decides.
        for line in [
            "",
            "-",
            "-0",
            "+1",
            "01",
            "-01",
            "1.0",
            "1e3",
            "1 2",
            "\u{a0}1",
            "9223372036854775808",
            "0x1",
        ] {
            assert_eq!(json_integer(line), None, "{line:?}");
        }
        let one = |ty| ExportKind::Numeric {
            params: vec![ty],
            results: vec![],
        };
        assert_eq!(
            to_input(&one(ValType::I32), s("-3")),
            Ok(Input::Numbers(vec![Value::I32(-3)]))
        );
        assert_eq!(
            to_input(&one(ValType::F64), s("3")),
            Ok(Input::Numbers(vec![Value::F64(3.0)]))
        );
        // The same refusal as the parser's path gives for `[4294967296]`.
        let fast = to_input(&one(ValType::I32), s("4294967296")).unwrap_err();
        let slow = to_input(&one(ValType::I32), s("[4294967296]")).unwrap_err();
        assert_eq!(fast, slow);
        assert_eq!(fast, "argument 1 (4294967296) is not a valid i32");
    }

    #[test]
    fn result_lines_of_integers_are_the_serializers() {
        let mut stats = TaskStats::default();
        stats.fuel_used = 12345;
        stats.duration = std::time::Duration::from_nanos(7_654_321);
        for v in [
            Value::I32(-5),
            Value::I32(i32::MIN),
            Value::I64(i64::MAX),
            Value::I64(0),
        ] {
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            let result = || Ok(Output::Numbers(vec![v]));
            write_result_line(&mut fast, result(), &stats).unwrap();
            write_result_line_serialized(&mut slow, result(), &stats).unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(slow).unwrap()
            );
        }
    }

    #[test]
    fn a_numeric_line_is_refused_at_its_first_extra_element() {
        // Ten million elements where two are taken: the parse stops at the third, it never
        // holds the rest (the old parse built all of them as a JSON tree first).
        let k = ExportKind::Numeric {
            params: vec![ValType::I64, ValType::I64],
            results: vec![],
        };
        let line = format!("[{}1]", "1,".repeat(10_000_000));
        let e = numeric_args(&line, 2).unwrap_err();
        assert!(e.contains("takes 2 argument(s), the line has more"), "{e}");
        assert!(to_input(&k, line).is_err());
        let nested = format!("[{}]", "[1],".repeat(1000) + "1");
        assert!(numeric_args(&nested, 2)
            .unwrap_err()
            .contains("invalid type"));
    }

    #[test]
    fn result_lines_copy_guest_json_onto_one_line() {
        let mut stats = TaskStats::default();
        stats.fuel_used = 3;
        stats.stdout = b"hi".to_vec();
        let mut out = Vec::new();
        let pretty = b"{\n  \"b\": [1,\n 2],\r\n  \"a\": \"x\\ny\"\n}".to_vec();
        write_result_line(&mut out, Ok(Output::Json(pretty)), &stats).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"duration_us\":0,\"fuel\":3,\"ok\":{\"b\":[1,2],\"a\":\"x\\ny\"},\"stdout\":\"hi\"}\n"
        );
        let mut out = Vec::new();
        write_result_line(&mut out, Ok(Output::Json(b"{oops".to_vec())), &stats).unwrap();
        let line: JsonValue = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["error"]["kind"], "bad_output");
        assert!(line.get("ok").is_none());
        let mut out = Vec::new();
        write_result_line(&mut out, Ok(Output::Numbers(vec![Value::I64(7)])), &stats).unwrap();
        let line: JsonValue = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["ok"], 7);
    }
}
