(* bench/peers/weak.ml -- bench/weak.c's tables on OCaml 5.3: a weak hash
   table (Weak) of N entries, K per mille also held strongly, and an
   ephemeron table (Ephemeron.K1) of N (key, data) pairs, K per mille of the
   keys held strongly.  Entries: a 2-field block (id, a 4-field payload);
   keys: a 2-field block, data a 4-field block, as in bench/weak.c.  Timed:
   Gc.full_major (the major GC that clears the table), then Gc.compact;
   rss_after is VmRSS after the compaction; collect_cpu_ms is the process's
   CPU time in Gc.full_major.  One JSON line per run.

   --hold-major: the major GC is held off while the table is built
   (space_overhead 1000000, the settings restored before the timed
   Gc.full_major), so that the timed collection starts, as bench/weak.c's
   ph_collect does (gc_percent 0), from a heap that still holds every
   dropped entry; by default OCaml's incremental major cycles run during
   the build (untimed) and have already cleared and swept most of them.
   heap_words_before and major_cycles_before say which: the heap's words
   and the major cycles completed when the timed collection starts;
   present_before (weak table) how many entries the table still held.

   Build: ocamlfind-free, with the stock 5.3 toolchain:
     $PREFIX/bin/ocamlopt -I +unix unix.cmxa weak.ml -o weak_ocaml53 *)

type entry = { id : int; payload : int array }

let rss () =
  let ic = open_in "/proc/self/status" in
  let rec loop () =
    match input_line ic with
    | l when String.length l > 6 && String.sub l 0 6 = "VmRSS:" ->
        Scanf.sscanf l "VmRSS: %d kB" (fun k -> k * 1024)
    | _ -> loop ()
    | exception End_of_file -> 0
  in
  let r = loop () in
  close_in ic;
  r

let now () = Unix.gettimeofday () *. 1000.

(* the process's CPU time (getrusage: user + system), as bench/weak.c's
   peer_cpu_ms counts it *)
let cpu () = Sys.time () *. 1000.

(* the keep draw: a splitmix64-style stream, K per mille *)
let state = ref 42
let draw () =
  state := !state + 0x1c8864680b583eb;
  let z = !state in
  let z = (z lxor (z lsr 30)) * 0x3f58476d1ce4e5b9 in
  let z = (z lxor (z lsr 27)) * 0x14d049bb133111eb in
  (z lxor (z lsr 31)) land max_int

let () =
  let n = ref 1_000_000 and keep = ref 100 and runs = ref 1
  and table = ref "weak" and hold = ref false in
  Arg.parse
    [ ("--n", Arg.Set_int n, "entries");
      ("--hold-major", Arg.Set hold, "no major GC work during the build");
      ("--keep", Arg.Set_int keep, "per mille kept");
      ("--runs", Arg.Set_int runs, "runs");
      ("--table", Arg.Set_string table, "weak|ephemeron") ]
    (fun _ -> ()) "weak_ocaml53";
  let n = !n in
  let dummy = { id = -1; payload = [||] } in
  for run = 0 to !runs - 1 do
    Gc.compact ();
    state := 42;
    let kept = ref 0 and present = ref 0 in
    let settings = Gc.get () in
    if !hold then Gc.set { settings with Gc.space_overhead = 1_000_000 };
    let heap_before = ref 0 and cycles_before = ref 0
    and present_before = ref (-1) in
    (* untimed: the state the timed collection starts from *)
    let before () =
      Gc.set settings;
      let st = Gc.quick_stat () in
      heap_before := st.Gc.heap_words;
      cycles_before := st.Gc.major_collections
    in
    let t0 = now () in
    let cpu_ms = ref 0. in
    let build_ms, collect_ms, compact_ms =
      if !table = "weak" then begin
        let tab = Weak.create n in
        let strong = Array.make n dummy in
        for i = 0 to n - 1 do
          let e = { id = i; payload = Array.make 4 i } in
          Weak.set tab i (Some e);
          if draw () mod 1000 < !keep then begin
            strong.(i) <- e;
            incr kept
          end
        done;
        let b = now () -. t0 in
        before ();
        present_before := 0;
        for i = 0 to n - 1 do
          if Weak.check tab i then incr present_before
        done;
        let t1 = now () and u1 = cpu () in
        Gc.full_major ();
        let c = now () -. t1 in
        cpu_ms := cpu () -. u1;
        let t2 = now () in
        Gc.compact ();
        let k = now () -. t2 in
        for i = 0 to n - 1 do
          match Weak.get tab i with
          | Some e -> if e.id = i && strong.(i) == e then incr present
          | None -> ()
        done;
        ignore (Sys.opaque_identity strong);
        (b, c, k)
      end else begin
        let dkey = (-1, 0) in
        let tab = Array.make n (Ephemeron.K1.make dkey [||]) in
        let strong = Array.make n dkey in
        for i = 0 to n - 1 do
          let key = (i, 1) in
          tab.(i) <- Ephemeron.K1.make key (Array.make 4 i);
          if draw () mod 1000 < !keep then begin
            strong.(i) <- key;
            incr kept
          end
        done;
        let b = now () -. t0 in
        before ();
        let t1 = now () and u1 = cpu () in
        Gc.full_major ();
        let c = now () -. t1 in
        cpu_ms := cpu () -. u1;
        let t2 = now () in
        Gc.compact ();
        let k = now () -. t2 in
        for i = 0 to n - 1 do
          if strong.(i) != dkey then
            match Ephemeron.K1.query tab.(i) strong.(i) with
            | Some d when d.(0) = i -> incr present
            | _ -> ()
        done;
        ignore (Sys.opaque_identity (tab, strong));
        (b, c, k)
      end
    in
    let r = rss () in
    Printf.printf
      "{\"system\":\"ocaml-5.3\",\"table\":\"%s\",\"n\":%d,\"keep\":%d,\
       \"run\":%d,\"build_ms\":%.3f,\"collect_ms\":%.3f,\
       \"collect_cpu_ms\":%.3f,\"compact_ms\":%.3f,\
       \"rss_after\":%d,\"kept\":%d,\"hold_major\":%b,\
       \"heap_words_before\":%d,\"major_cycles_before\":%d,\
       \"present_before\":%d,\"ok\":%b}\n%!"
      !table n !keep run build_ms collect_ms !cpu_ms compact_ms r !kept !hold
      !heap_before !cycles_before !present_before (!present = !kept)
  done
