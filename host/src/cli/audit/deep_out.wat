;; A command of `wasmpool audit` that nests 300 directories in /out (d/d/…/d), deeper than
;; a worker's 256 descriptors, each made and entered through the one above, and leaves a
;; file `f` in the deepest. It exits 1, 2 or 3 if the sandbox refuses making a directory,
;; entering it or making the file (then there is less to clean up, not more). /out is the
;; first preopen, fd 3.
;;
;; Memory: 0..8 the new descriptor; 16.. the names "d" and "f".
(module
  (import "wasi_snapshot_preview1" "path_create_directory"
    (func $mkdir (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close"
    (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "d")
  (data (i32.const 17) "f")
  (func (export "_start")
    (local $dir i32)
    (local $level i32)
    (local.set $dir (i32.const 3))
    (loop $down
      (if (call $mkdir (local.get $dir) (i32.const 16) (i32.const 1))
        (then (call $proc_exit (i32.const 1))))
      ;; oflags 2: O_DIRECTORY; rights to make directories and files and open them
      ;; (path_create_directory, path_create_file, path_open), and to pass on fd_write.
      (if (call $path_open (local.get $dir) (i32.const 0) (i32.const 16) (i32.const 1)
            (i32.const 2) (i64.const 0x2600) (i64.const 0x2640) (i32.const 0) (i32.const 0))
        (then (call $proc_exit (i32.const 2))))
      (if (i32.ne (local.get $dir) (i32.const 3))
        (then (drop (call $fd_close (local.get $dir)))))
      (local.set $dir (i32.load (i32.const 0)))
      (local.set $level (i32.add (local.get $level) (i32.const 1)))
      (br_if $down (i32.lt_u (local.get $level) (i32.const 300))))
    ;; oflags 1: O_CREAT; fd_write.
    (if (call $path_open (local.get $dir) (i32.const 0) (i32.const 17) (i32.const 1)
          (i32.const 1) (i64.const 0x40) (i64.const 0) (i32.const 0) (i32.const 0))
      (then (call $proc_exit (i32.const 3))))))
