;; The well-behaved task run after every hostile case: square(x) = x * x.
(module
  (func (export "square") (param $x i64) (result i64)
    (i64.mul (local.get $x) (local.get $x))))
