;; The built-in guest of `wasmpool demo`: small tasks as plain numeric exports.
(module
  ;; square(x) = x * x
  (func (export "square") (param $x i64) (result i64)
    (i64.mul (local.get $x) (local.get $x)))

  ;; counting(n): the CPU-bound loop `while n > 0: n -= 1`; returns the final n (0).
  (func (export "counting") (param $n i64) (result i64)
    (block $done
      (loop $again
        (br_if $done (i64.le_s (local.get $n) (i64.const 0)))
        (local.set $n (i64.sub (local.get $n) (i64.const 1)))
        (br $again)))
    (local.get $n))

  ;; spin(): never returns; the sandbox has to stop it.
  (func (export "spin") (result i64)
    (loop $forever (br $forever))
    (i64.const 0))

  ;; crash(x) = 1 / x: with x = 0, an integer division by zero, which traps.
  (func (export "crash") (param $x i64) (result i64)
    (i64.div_s (i64.const 1) (local.get $x))))
