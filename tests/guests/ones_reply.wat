(module
  (memory (export "memory") 1100)
  (func (export "wasmpool_alloc") (param i32) (result i32) (i32.const 16))
  ;; replies [1,1,...,1] with n ones, n = the JSON number given (parsed as decimal digits)
  (func (export "wasmpool.task.ones") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32) (local $i i32) (local $p i32)
    ;; parse decimal input
    (block $done (loop $digits
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (local.set $n (i32.add (i32.mul (local.get $n) (i32.const 10))
        (i32.sub (i32.load8_u (i32.add (local.get $ptr) (local.get $i))) (i32.const 48))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $digits)))
    (i32.store8 (i32.const 1024) (i32.const 0))
    (i32.store8 (i32.const 1025) (i32.const 91))
    (local.set $p (i32.const 1026))
    (local.set $i (i32.const 0))
    (block $end (loop $ones
      (br_if $end (i32.ge_u (local.get $i) (local.get $n)))
      (i32.store16 (local.get $p) (i32.const 0x2c31))
      (local.set $p (i32.add (local.get $p) (i32.const 2)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $ones)))
    ;; replace the last comma by ]
    (i32.store8 (i32.sub (local.get $p) (i32.const 1)) (i32.const 93))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32))
            (i64.extend_i32_u (i32.sub (local.get $p) (i32.const 1024)))))
)
