;; A module whose start function loops forever: it never finishes instantiating.
(module
  (func $start (loop $forever (br $forever)))
  (start $start)
  (func (export "run") (result i64) (i64.const 0)))
