(module
  ;; `f(n)`: traps for 13, prints `odd` for odd `n`, burns `n` loop turns and returns
  ;; `n * n`: each call's result, output and fuel are its own (batches keep them apart).
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "odd\n")
  (func (export "f") (param $n i64) (result i64)
    (local $i i64)
    (if (i64.eq (local.get $n) (i64.const 13)) (then unreachable))
    (if (i64.eq (i64.rem_u (local.get $n) (i64.const 2)) (i64.const 1))
      (then
        (i32.store (i32.const 0) (i32.const 16))
        (i32.store (i32.const 4) (i32.const 4))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
    (block $done (loop $l
      (br_if $done (i64.ge_u (local.get $i) (local.get $n)))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br $l)))
    (i64.mul (local.get $n) (local.get $n))))
