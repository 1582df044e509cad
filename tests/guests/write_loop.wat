;; A WASI command that writes argv-free, fixed output: 1024 writes of 64 KiB to stdout
;; (64 MiB in all), then exits 0. Used to check that streamed output applies backpressure.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (local $i i32)
    ;; iovec at 0: buf = 1024, len = 65536
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 65536))
    (memory.fill (i32.const 1024) (i32.const 120) (i32.const 65536))
    (block $done (loop $write
      (br_if $done (i32.ge_u (local.get $i) (i32.const 1024)))
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $write))))
)
