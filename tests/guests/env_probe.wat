;; Reports what a task sees of its environment through WASI: `count` (how many variables)
;; and `bytes` (the size of their `KEY=VALUE\0` strings), both from environ_sizes_get.
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $sizes (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "count") (result i32)
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (i32.load (i32.const 0)))
  (func (export "bytes") (result i32)
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (i32.load (i32.const 4))))
