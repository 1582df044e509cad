;; A module with initializers, for tests/snapshot.rs.
;;
;; `init` (after the reactor hook `_initialize`) builds a table of squares in memory, counts
;; its own runs and its argv in globals, and sets the state tasks start from; tasks read the
;; table (`lookup`), the counters (`inits`, `reactor_inits`, `argc`), or change the state
;; (`bump`) to show that no task sees another's changes. The rest are hostile initializers.
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  ;; Page 0: scratch words at 0..32, the table of 1000 squares at 4096; page 1: a buffer.
  (memory (export "memory") 2)
  (global $inits (mut i32) (i32.const 0))
  (global $reactor (mut i32) (i32.const 0))
  (global $argc (mut i32) (i32.const 0))
  (global $state (mut i32) (i32.const 0))

  (func (export "_initialize")
    (global.set $reactor (i32.add (global.get $reactor) (i32.const 1))))

  (func (export "init")
    (local $i i32)
    (global.set $inits (i32.add (global.get $inits) (i32.const 1)))
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (global.set $argc (i32.load (i32.const 0)))
    (i32.store (i32.const 0) (i32.const 0))
    (i32.store (i32.const 4) (i32.const 0))
    (loop $fill
      (i32.store
        (i32.add (i32.const 4096) (i32.shl (local.get $i) (i32.const 2)))
        (i32.mul (local.get $i) (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $fill (i32.lt_u (local.get $i) (i32.const 1000))))
    (global.set $state (i32.const 100)))

  (func (export "lookup") (param $i i32) (result i32)
    (i32.load (i32.add (i32.const 4096) (i32.shl (local.get $i) (i32.const 2)))))
  (func (export "inits") (result i32) (global.get $inits))
  (func (export "reactor_inits") (result i32) (global.get $reactor))
  (func (export "argc") (result i32) (global.get $argc))
  ;; As a reactor's exit code: 10 per `_initialize` run plus 1 per `init` run.
  (func (export "status") (result i32)
    (i32.add (i32.mul (global.get $reactor) (i32.const 10)) (global.get $inits)))

  ;; Changes the global state and the table's first entry; returns both, after the change.
  (func (export "bump") (result i32)
    (i32.store (i32.const 4096) (i32.add (i32.load (i32.const 4096)) (i32.const 1)))
    (global.set $state (i32.add (global.get $state) (i32.const 1)))
    (i32.add (global.get $state) (i32.load (i32.const 4096))))

  ;; Hostile initializers.
  (func (export "spin") (loop $l (br $l)))
  (func (export "trap") unreachable)
  (func (export "grow")
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))))
  (func (export "exit") (call $proc_exit (i32.const 3)))
  (func (export "exit0") (call $proc_exit (i32.const 0)))
  (func (export "fail") (result i32) (i32.const 7))
  ;; 64 KiB to stdout at a time, forever.
  (func (export "flood")
    (i32.store (i32.const 16) (i32.const 65536))
    (i32.store (i32.const 20) (i32.const 65536))
    (loop $l
      (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
      (br $l)))
  (func (export "takes_a_param") (param i32)))
