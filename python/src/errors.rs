//! wasmpool's errors as the Python exceptions of `wasmpool/_errors.py`: the Rust error's kind,
//! its message (its `Display`, causes included) and its fields as attributes.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use wasmpool::error::Chain;
use wasmpool::{LoadError, PoolError, TaskError};

/// The exception instance for `error` (`wasmpool._errors.from_rust`).
pub fn task_error(py: Python<'_>, error: &TaskError) -> PyErr {
    let fields = PyDict::new(py);
    let set = |k: &str, v: Bound<'_, PyAny>| {
        // Setting a str key into a fresh dict does not fail.
        let _ = fields.set_item(k, v);
    };
    match error {
        TaskError::Timeout { limit } => set(
            "limit",
            limit
                .as_secs_f64()
                .into_pyobject(py)
                .expect("float")
                .into_any(),
        ),
        TaskError::FuelExhausted { fuel } => {
            set("fuel", fuel.into_pyobject(py).expect("int").into_any())
        }
        TaskError::MemoryLimit { limit, initial } => {
            set("limit", limit.into_pyobject(py).expect("int").into_any());
            set(
                "initial",
                initial.into_pyobject(py).expect("int").into_any(),
            );
        }
        TaskError::Trap { code, .. } => set(
            "code",
            code.map(|c| c.name())
                .into_pyobject(py)
                .expect("str")
                .into_any(),
        ),
        TaskError::Exit { code } => set("code", code.into_pyobject(py).expect("int").into_any()),
        _ => {}
    }
    build(py, error.kind(), &error.to_string(), fields)
}

/// The `wasmpool.LoadError` for `error`.
pub fn load_error(py: Python<'_>, error: &LoadError) -> PyErr {
    build(
        py,
        &format!("load:{}", error.kind()),
        &Chain(error).to_string(),
        PyDict::new(py),
    )
}

/// The `wasmpool.PoolError` for `error`.
pub fn pool_error(py: Python<'_>, error: &PoolError) -> PyErr {
    build(py, "pool", &Chain(error).to_string(), PyDict::new(py))
}

fn build(py: Python<'_>, kind: &str, message: &str, fields: Bound<'_, PyDict>) -> PyErr {
    let made = py
        .import("wasmpool._errors")
        .and_then(|m| m.getattr("from_rust"))
        .and_then(|f| f.call1((kind, message, fields)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}
