(* worker(T, S, K) peer in OCaml (workloads.md): the tasks of worker_c.c and
   demos/demo_worker.c with the same generator (fragcore.ml), so that for a given seed
   every system allocates the same blocks and keeps the same ones.

   One domain runs T tasks. Each task allocates S bytes of frag-like blocks (the frag size
   mix: an int array of w fields, (w + 1) words with its header, every field an
   immediate). Each block is kept with probability K/1000 in a long-lived table; when the
   table would hold more than S/10 bytes, random older entries (from earlier tasks) are
   dropped. The other blocks are the task's temporaries: they stay reachable (from chunks
   of 65536) until the task ends, then die. The task ends with Gc.compact (), timed as
   release_ms, then RSS (VmRSS of /proc/self/status) and the mappings (lines of
   /proc/self/maps) are sampled. One JSON line per task, the peers' schema:
   {"system","task","rss","maps","table_bytes","task_ms","release_ms","heap_bytes","seed"}
   (heap_bytes: Gc.quick_stat's heap_words after the compaction, in bytes).

     worker [--tasks T] [--bytes S[k|M|G]] [--keep K] [--seed S] [--system NAME]

   Built with each OCaml 5.3 prefix's ocamlopt (stock, and poolheap's runtime from
   ocaml/build.sh): ocamlopt -I +unix unix.cmxa fragcore.ml worker.ml *)
open Fragcore

let chunk = 65536 (* temporaries per chunk *)

let parse_size s =
  let n = String.length s in
  if n = 0 then invalid_arg "size";
  let mul, body =
    match s.[n - 1] with
    | 'k' | 'K' -> (1024., String.sub s 0 (n - 1))
    | 'M' -> (1048576., String.sub s 0 (n - 1))
    | 'G' -> (1073741824., String.sub s 0 (n - 1))
    | _ -> (1., s)
  in
  int_of_float (float_of_string body *. mul)

let usage () =
  prerr_endline
    "usage: worker [--tasks T] [--bytes S[k|M|G]] [--keep K] [--seed S] [--system NAME]";
  exit 1

let () =
  let tasks = ref 20 and bytes = ref (256 * 1048576) and keep = ref 100 in
  let seed = ref None and system = ref "ocaml" in
  let argv = Sys.argv in
  let i = ref 1 in
  let arg () =
    incr i;
    if !i >= Array.length argv then usage ();
    argv.(!i)
  in
  (try
     while !i < Array.length argv do
       (match argv.(!i) with
        | "--tasks" -> tasks := int_of_string (arg ())
        | "--bytes" -> bytes := parse_size (arg ())
        | "--keep" -> keep := int_of_string (arg ())
        | "--seed" -> seed := Some (Int64.of_string (arg ()))
        | "--system" -> system := arg ()
        | _ -> usage ());
       incr i
     done
   with Failure _ | Invalid_argument _ -> usage ());
  let t_n = !tasks and s = !bytes and k = !keep and system = !system in
  if t_n < 1 || s < 1024 || k < 0 || k > 1000 then usage ();
  let seed = match !seed with Some x -> x | None -> default_seed () in
  Printf.eprintf "worker: system %s tasks %d bytes %d keep %d seed %Lu\n%!" system t_n s k
    seed;
  let table_cap_bytes = s / 10 in
  (* the smallest block is 3 words, so the table never needs more entries *)
  let table_cap = (table_cap_bytes / 24) + 2 in
  let table : int array array = Array.make table_cap [||] in
  let table_n = ref 0 and table_live = ref 0 in
  let rng = rng_for seed 0 in
  let counter = ref 0 in
  for t = 0 to t_n - 1 do
    let t0 = now_ms () in
    let old_n = ref !table_n in (* entries [0, old_n) come from earlier tasks *)
    let allocated = ref 0 in
    (* this task's temporaries: full chunks, and the one being filled *)
    let temps = ref [] and cur = ref (Array.make chunk [||]) and used = ref 0 in
    while !allocated < s do
      let w = fields rng in
      let bytes = (w + 1) * 8 in
      let b = Array.make w !counter in
      incr counter;
      allocated := !allocated + bytes;
      let kept =
        uniform rng 1000 < k
        && begin
          (* make room: drop random older entries (any entry if no older one is left) *)
          while !table_live + bytes > table_cap_bytes && !table_n > 0 do
            let victim =
              if !old_n > 0 then begin
                let j = uniform rng !old_n in
                let v = table.(j) in
                table.(j) <- table.(!old_n - 1);
                table.(!old_n - 1) <- table.(!table_n - 1);
                decr old_n;
                v
              end else begin
                let j = uniform rng !table_n in
                let v = table.(j) in
                table.(j) <- table.(!table_n - 1);
                v
              end
            in
            decr table_n;
            table.(!table_n) <- [||];
            table_live := !table_live - ((Array.length victim + 1) * 8)
          done;
          !table_live + bytes <= table_cap_bytes && !table_n < table_cap
        end
      in
      if kept then begin
        table.(!table_n) <- b;
        incr table_n;
        table_live := !table_live + bytes
      end else begin
        (* a temporary of this task *)
        if !used = chunk then begin
          temps := !cur :: !temps;
          cur := Array.make chunk [||];
          used := 0
        end;
        !cur.(!used) <- b;
        incr used
      end
    done;
    (* the task ends: its temporaries die *)
    temps := [];
    cur := [||];
    let task_ms = now_ms () -. t0 in
    let r0 = now_ms () in
    Gc.compact ();
    let release_ms = now_ms () -. r0 in
    let heap_bytes = (Gc.quick_stat ()).Gc.heap_words * 8 in
    Printf.printf
      "{\"system\":%s,\"task\":%d,\"rss\":%d,\"maps\":%d,\"table_bytes\":%d,\"task_ms\":%.2f,\
       \"release_ms\":%.2f,\"heap_bytes\":%d,\"seed\":%Lu}\n%!"
      (json_str system) t (rss_bytes ()) (maps_count ()) !table_live task_ms release_ms
      heap_bytes seed
  done
