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

   --phases: OCaml's runtime events are recorded during the timed
   Gc.full_major (Runtime_events, read in-process after it) and the line
   gains phases_ms: per runtime phase, the summed span and count (spans
   nest: major_slice holds major_mark, major_sweep, major_ephe_mark,
   major_ephe_sweep), and phase_spans on stderr in order, cycle by cycle.

   Build: ocamlfind-free, with the stock 5.3 toolchain:
     $PREFIX/bin/ocamlopt -I +unix -I +runtime_events unix.cmxa \
       runtime_events.cmxa weak.ml -o weak_ocaml53 *)

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

(* --phases: the spans of the runtime phases read from [cur], as a JSON
   object of (summed ms, count) per phase; the leaf phases of the major GC
   also go to stderr in order *)
let phases_json cur =
  let tbl = Hashtbl.create 16 and open_ = Hashtbl.create 16 in
  let ts t = Int64.to_float (Runtime_events.Timestamp.to_int64 t) /. 1e6 in
  let runtime_begin _ t ph = Hashtbl.replace open_ ph (ts t) in
  let runtime_end _ t ph =
    match Hashtbl.find_opt open_ ph with
    | None -> ()
    | Some t0 ->
        let d = ts t -. t0 in
        let name = Runtime_events.runtime_phase_name ph in
        (match ph with
         | Runtime_events.EV_MAJOR_MARK | EV_MAJOR_SWEEP | EV_MAJOR_EPHE_MARK
         | EV_MAJOR_EPHE_SWEEP ->
             Printf.eprintf "phase_span %s %.3f\n" name d
         | _ -> ());
        let s, n = try Hashtbl.find tbl name with Not_found -> (0., 0) in
        Hashtbl.replace tbl name (s +. d, n + 1)
  in
  let cb = Runtime_events.Callbacks.create ~runtime_begin ~runtime_end () in
  ignore (Runtime_events.read_poll cur cb None);
  let items =
    Hashtbl.fold
      (fun name (s, n) acc ->
        Printf.sprintf "\"%s\":[%.3f,%d]" name s n :: acc)
      tbl []
  in
  "{" ^ String.concat "," (List.sort compare items) ^ "}"

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
  and table = ref "weak" and hold = ref false and phases = ref false in
  Arg.parse
    [ ("--n", Arg.Set_int n, "entries");
      ("--phases", Arg.Set phases, "runtime events of the timed collection");
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
    let cursor = ref None and phases_out = ref "" in
    let before () =
      Gc.set settings;
      let st = Gc.quick_stat () in
      heap_before := st.Gc.heap_words;
      cycles_before := st.Gc.major_collections;
      if !phases then begin
        Runtime_events.start ();
        let cur = Runtime_events.create_cursor None in
        (* what was recorded so far is not the timed collection's *)
        ignore
          (Runtime_events.read_poll cur (Runtime_events.Callbacks.create ())
             None);
        cursor := Some cur
      end
    in
    let after () =
      match !cursor with
      | Some cur ->
          phases_out := ",\"phases_ms\":" ^ phases_json cur;
          Runtime_events.free_cursor cur;
          Runtime_events.pause ();
          cursor := None
      | None -> ()
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
        after ();
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
        after ();
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
       \"present_before\":%d%s,\"ok\":%b}\n%!"
      !table n !keep run build_ms collect_ms !cpu_ms compact_ms r !kept !hold
      !heap_before !cycles_before !present_before !phases_out
      (!present = !kept)
  done
