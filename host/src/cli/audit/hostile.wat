;; The hostile guest of `wasmpool audit`: one export per misbehaviour, each `() -> i64`.
;; Exports that probe for authority (files, environment, sockets, stdin) return how many of
;; their attempts succeeded, so 0 means "denied".
;;
;; Memory layout (2 pages):
;;      0..64     scratch: results written by WASI calls
;;     64..112    one poll_oneoff subscription
;;    128..160    one poll_oneoff event
;;    256..       strings (data segments below)
;;   1024..1032   one iovec {ptr, len}
;;   2048..67584  a 64 KiB buffer for the stdout flood
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get"
    (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept"
    (func $sock_accept (param i32 i32 i32) (result i32)))

  ;; WASI calls need the memory exported as "memory".
  (memory (export "memory") 2)
  (global $zero (mut i32) (i32.const 0))

  (data (i32.const 256) "/etc/passwd")                 ;; 11 bytes; "etc/passwd" from 257
  (data (i32.const 288) "wasmpool-audit-escape.txt")   ;; 25 bytes
  (data (i32.const 320) "audit guest panicked: boom\n")  ;; 27 bytes

  ;; 1 if a WASI call returned errno 0 (success), else 0.
  (func $ok (param $errno i32) (result i64)
    (i64.extend_i32_u (i32.eqz (local.get $errno))))

  ;; Loops forever without calling anything.
  (func (export "spin") (result i64)
    (loop $forever (br $forever))
    (i64.const 0))

  ;; Sleeps for one hour inside a host call: poll_oneoff on a relative monotonic-clock
  ;; subscription. Epoch interruption cannot reach it; only the host killing the worker can.
  (func (export "sleep_an_hour") (result i64)
    (i64.store (i32.const 64) (i64.const 0))              ;; userdata
    (i32.store8 (i32.const 72) (i32.const 0))             ;; tag: clock
    (i32.store (i32.const 80) (i32.const 1))              ;; clock id: monotonic
    (i64.store (i32.const 88) (i64.const 3600000000000))  ;; timeout: 1 h in ns
    (i64.store (i32.const 96) (i64.const 0))              ;; precision
    (i32.store16 (i32.const 104) (i32.const 0))           ;; flags: relative
    (i64.extend_i32_u
      (call $poll_oneoff (i32.const 64) (i32.const 128) (i32.const 1) (i32.const 0))))

  ;; Grows memory 1 MiB at a time until a grow is refused; returns the grows that succeeded.
  (func (export "grow_forever") (result i64)
    (local $grown i64)
    (block $refused
      (loop $again
        (br_if $refused (i32.eq (memory.grow (i32.const 16)) (i32.const -1)))
        (local.set $grown (i64.add (local.get $grown) (i64.const 1)))
        (br $again)))
    (local.get $grown))

  ;; One grow of 60000 pages (3.75 GiB); returns the old size in pages, or -1 if refused.
  (func (export "grow_huge") (result i64)
    (i64.extend_i32_s (memory.grow (i32.const 60000))))

  ;; Unbounded recursion (not a tail call: the addition comes after the call).
  (func $recurse (param $n i64) (result i64)
    (i64.add
      (call $recurse (i64.add (local.get $n) (i64.const 1)))
      (local.get $n)))
  (func (export "stack_overflow") (result i64)
    (call $recurse (i64.const 0)))

  (func (export "unreachable") (result i64)
    unreachable)

  ;; 1 / 0, the divisor read from a mutable global so that nothing can fold it away.
  (func (export "divide_by_zero") (result i64)
    (i64.extend_i32_s (i32.div_s (i32.const 1) (global.get $zero))))

  ;; What a Rust guest's panic does: the message to stderr, then abort (`unreachable`).
  (func (export "panic") (result i64)
    (i32.store (i32.const 1024) (i32.const 320))
    (i32.store (i32.const 1028) (i32.const 27))
    (drop (call $fd_write (i32.const 2) (i32.const 1024) (i32.const 1) (i32.const 0)))
    unreachable)

  (func (export "exit_7") (result i64)
    (call $proc_exit (i32.const 7))
    unreachable)

  ;; Writes a 64 KiB chunk to stdout 1000 times (64 MB); returns the bytes written.
  (func (export "flood") (result i64)
    (local $i i32)
    (local $total i64)
    (memory.fill (i32.const 2048) (i32.const 0x41) (i32.const 65536))
    (i32.store (i32.const 1024) (i32.const 2048))
    (i32.store (i32.const 1028) (i32.const 65536))
    (loop $again
      (if (i32.eqz (call $fd_write (i32.const 1) (i32.const 1024) (i32.const 1) (i32.const 0)))
        (then
          (local.set $total
            (i64.add (local.get $total) (i64.extend_i32_u (i32.load (i32.const 0)))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 1000))))
    (local.get $total))

  ;; 1 if `path` (at `ptr`, `len` bytes) opens relative to `fd` with `oflags` and `rights`.
  (func $opens (param $fd i32) (param $ptr i32) (param $len i32) (param $oflags i32)
               (param $rights i64) (result i64)
    (call $ok
      (call $path_open
        (local.get $fd) (i32.const 1)             ;; dirflags: follow symlinks
        (local.get $ptr) (local.get $len)
        (local.get $oflags)
        (local.get $rights) (i64.const 0)         ;; rights, inheriting rights
        (i32.const 0) (i32.const 8))))            ;; fdflags, opened fd out

  ;; For every fd a preopen could have (3..31): does it describe a preopened directory, and
  ;; do "/etc/passwd" and "etc/passwd" open for reading relative to it? Counts the successes.
  (func (export "read_file") (result i64)
    (local $fd i32)
    (local $got i64)
    (local.set $fd (i32.const 3))
    (loop $next
      (local.set $got
        (i64.add (local.get $got) (call $ok (call $fd_prestat_get (local.get $fd) (i32.const 0)))))
      (local.set $got                             ;; "/etc/passwd", rights: fd_read
        (i64.add (local.get $got)
          (call $opens (local.get $fd) (i32.const 256) (i32.const 11) (i32.const 0) (i64.const 2))))
      (local.set $got                             ;; "etc/passwd"
        (i64.add (local.get $got)
          (call $opens (local.get $fd) (i32.const 257) (i32.const 10) (i32.const 0) (i64.const 2))))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $fd) (i32.const 32))))
    (local.get $got))

  ;; For fds 3..31: can a file be created (O_CREAT | O_TRUNC, for writing) relative to it?
  (func (export "write_file") (result i64)
    (local $fd i32)
    (local $got i64)
    (local.set $fd (i32.const 3))
    (loop $next
      (local.set $got                             ;; "wasmpool-audit-escape.txt", creat | trunc,
        (i64.add (local.get $got)                 ;; rights: fd_write
          (call $opens (local.get $fd) (i32.const 288) (i32.const 25) (i32.const 9) (i64.const 64))))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $fd) (i32.const 32))))
    (local.get $got))

  ;; Environment variables plus command-line arguments the guest can see.
  (func (export "env_and_args") (result i64)
    (i32.store (i32.const 0) (i32.const -1))
    (i32.store (i32.const 8) (i32.const -1))
    (drop (call $environ_sizes_get (i32.const 0) (i32.const 4)))
    (drop (call $args_sizes_get (i32.const 8) (i32.const 12)))
    (i64.add
      (i64.extend_i32_u (i32.load (i32.const 0)))
      (i64.extend_i32_u (i32.load (i32.const 8)))))

  ;; Accepts a connection on every fd 0..31 (preview 1 has no way to create a socket; only
  ;; preopened ones could be used). Counts the successes.
  (func (export "accept_socket") (result i64)
    (local $fd i32)
    (local $got i64)
    (loop $next
      (local.set $got
        (i64.add (local.get $got)
          (call $ok (call $sock_accept (local.get $fd) (i32.const 0) (i32.const 0)))))
      (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $fd) (i32.const 32))))
    (local.get $got))

  ;; Reads up to 1 KiB from stdin; returns the bytes read (stdin is empty).
  (func (export "read_stdin") (result i64)
    (i32.store (i32.const 1024) (i32.const 2048))
    (i32.store (i32.const 1028) (i32.const 1024))
    (i32.store (i32.const 0) (i32.const 0))
    (drop (call $fd_read (i32.const 0) (i32.const 1024) (i32.const 1) (i32.const 0)))
    (i64.extend_i32_u (i32.load (i32.const 0)))))
