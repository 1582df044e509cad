//! Loading modules: what is refused at `Pool::load`, before any worker sees the module.

mod common;

use common::builder;
use wasmpool::LoadError;

const CALLABLE: &str = r#"(func (export "one") (result i64) i64.const 1)"#;

fn over_limit(wat: &str) -> String {
    let pool = builder().workers(1).compile_cache(None).build().unwrap();
    match pool.load(wat.as_bytes()) {
        Err(LoadError::OverLimit { message }) => message,
        Err(e) => panic!("expected OverLimit, got {e:?}"),
        Ok(m) => {
            let run = pool.submit::<i64>(&m, "one", ()).wait();
            panic!("the module loaded (its task: {run:?})")
        }
    }
}

#[test]
fn modules_over_the_workers_instance_limits_are_refused_at_load() {
    // Each of these used to load, then fail every task as `worker_lost`: the workers could
    // not fit it into an instance slot of their pooling allocator.
    let two_memories = format!("(module (memory 1) (memory 1) {CALLABLE})");
    assert!(over_limit(&two_memories)
        .contains("memories count of 2 exceeds the per-instance limit of 1"));
    let three_tables =
        format!("(module (table 1 funcref) (table 1 funcref) (table 1 funcref) {CALLABLE})");
    assert!(over_limit(&three_tables).contains("table"));
    let big_table = format!("(module (table 1048577 funcref) {CALLABLE})");
    let message = over_limit(&big_table);
    assert!(message.contains("1048577"), "{message}");
    // The error names the sandbox's limits in its own words too.
    let e = LoadError::OverLimit { message };
    assert!(e.to_string().contains("two tables of up to 2^20 elements"));
}

#[test]
fn modules_at_the_limits_load_and_run() {
    let pool = builder().workers(1).compile_cache(None).build().unwrap();
    let wat = format!("(module (memory 1) (table 1048576 funcref) (table 1 funcref) {CALLABLE})");
    let m = pool.load(wat.as_bytes()).unwrap();
    assert_eq!(pool.submit::<i64>(&m, "one", ()).wait(), Ok(1));
}
