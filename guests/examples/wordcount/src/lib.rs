//! wasmpool example guest: JSON tasks written with the guest SDK.
//!
//! - `wasmpool.task.wordcount`: `{"text": "..."}` → word, line and character counts
//!   and the three most frequent words;
//! - `wasmpool.task.divide`: `{"a": 7, "b": 2}` → `3`; dividing by zero is a task
//!   error (the example of a guest error);
//! - `wasmpool.task.echo`: returns its input, whatever JSON value it is.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use wasmpool_guest::serde_json::Value;
use wasmpool_guest::task;

/// Input of `wordcount`.
#[derive(Debug, Deserialize)]
pub struct WcIn {
    pub text: String,
}

/// Output of `wordcount`.
#[derive(Debug, Serialize, PartialEq)]
pub struct WcOut {
    /// Whitespace-separated words, like `wc -w`.
    pub words: u64,
    /// Lines, where a last line without a trailing newline counts too (`"a\nb"` has
    /// two lines, `"a\n"` one, `""` none).
    pub lines: u64,
    /// Unicode scalar values (`char`s), not bytes.
    pub chars: u64,
    /// The three most frequent words with their counts, most frequent first, ties
    /// broken alphabetically. Words are lowercased and stripped of leading and
    /// trailing non-alphanumeric characters ("Hello," counts as "hello"); words with
    /// nothing alphanumeric left are not counted here.
    pub top: Vec<(String, u64)>,
}

#[task]
fn wordcount(input: WcIn) -> WcOut {
    let text = &input.text;
    let mut freq: HashMap<String, u64> = HashMap::new();
    let mut words = 0;
    for word in text.split_whitespace() {
        words += 1;
        let word = word.trim_matches(|c: char| !c.is_alphanumeric());
        if !word.is_empty() {
            *freq.entry(word.to_lowercase()).or_insert(0) += 1;
        }
    }
    let mut top: Vec<(String, u64)> = freq.into_iter().collect();
    top.sort_unstable_by(|(wa, na), (wb, nb)| nb.cmp(na).then_with(|| wa.cmp(wb)));
    top.truncate(3);
    WcOut {
        words,
        lines: text.lines().count() as u64,
        chars: text.chars().count() as u64,
        top,
    }
}

/// Input of `divide`.
#[derive(Debug, Deserialize)]
pub struct DivIn {
    pub a: i64,
    pub b: i64,
}

/// `a / b`, truncating toward zero; an error when `b` is zero (or for
/// `i64::MIN / -1`, which does not fit).
#[task]
fn divide(input: DivIn) -> Result<i64, String> {
    let DivIn { a, b } = input;
    if b == 0 {
        return Err(format!("cannot divide {a} by zero"));
    }
    a.checked_div(b)
        .ok_or_else(|| format!("{a} / {b} does not fit in a 64-bit integer"))
}

/// Returns its input unchanged.
#[task]
fn echo(input: Value) -> Value {
    input
}
