;; A module importing a host function the sandbox does not provide.
(module
  (import "env" "evil" (func $evil (result i64)))
  (func (export "run") (result i64) (call $evil)))
