(* frag(N, D, K) peer for OCaml 5.3: the parallel compactor of OCaml >= 5.2.
   Each of D domains builds its own part (domain 0 is the main one); the other domains
   stay alive, spinning, until the end so that the full collection and the compaction run
   on all D domains, each with the pools it owns. Gc.full_major () is timed (collect_ms),
   then Gc.compact () (compact_ms), and the compaction phases are read from Runtime_events
   in this process (EV_COMPACT, EV_COMPACT_EVACUATE, EV_COMPACT_FORWARD, EV_COMPACT_RELEASE),
   each timed as its longest span over the domains. *)
open Fragcore

let phase_ms : (Runtime_events.runtime_phase, float) Hashtbl.t = Hashtbl.create 8
let starts : (int * Runtime_events.runtime_phase, int64) Hashtbl.t = Hashtbl.create 8
let lost = ref 0
(* domains whose whole EV_COMPACT span was read: should be D. Events can be lost when the
   ring wraps, as it does with D > 1: while the other domains answer its requests, domain 0
   runs thousands of empty major slices in the collection that precedes the compaction. *)
let compact_domains = ref []

let tracked = function
  | Runtime_events.EV_COMPACT | EV_COMPACT_EVACUATE | EV_COMPACT_FORWARD
  | EV_COMPACT_RELEASE -> true
  | _ -> false

let callbacks =
  let runtime_begin d ts ph =
    if tracked ph then Hashtbl.replace starts (d, ph) (Runtime_events.Timestamp.to_int64 ts) in
  let runtime_end d ts ph =
    if tracked ph then
      match Hashtbl.find_opt starts (d, ph) with
      | None -> ()
      | Some t0 ->
        Hashtbl.remove starts (d, ph);
        if ph = Runtime_events.EV_COMPACT && not (List.mem d !compact_domains) then
          compact_domains := d :: !compact_domains;
        let ms = Int64.to_float (Int64.sub (Runtime_events.Timestamp.to_int64 ts) t0) /. 1e6 in
        let prev = Option.value ~default:0. (Hashtbl.find_opt phase_ms ph) in
        (* a phase's time is its longest span over the domains (a domain runs each once) *)
        Hashtbl.replace phase_ms ph (Float.max prev ms) in
  let lost_events _ n = lost := !lost + n in
  Runtime_events.Callbacks.create ~runtime_begin ~runtime_end ~lost_events ()

let () =
  let a = parse_args "ocaml-5.3" in
  let seed = match a.seed with Some s -> s | None -> default_seed () in
  Printf.eprintf "frag: system %s shape %s n %d domains %d keep %d seed %Ld\n%!" a.system
    a.shape a.n a.domains a.keep seed;
  let parts = Array.make a.domains [||] in
  let lives = Array.make a.domains 0 in
  let built = Atomic.make 0 and stop = Atomic.make false in
  let build d =
    let r, l = build_part ~seed ~d ~n:(part_n a d) ~keep:a.keep in
    parts.(d) <- r;
    lives.(d) <- l;
    Atomic.incr built in
  let t0 = now_ms () in
  let others =
    List.init (a.domains - 1) (fun i ->
        Domain.spawn (fun () ->
            build (i + 1);
            while not (Atomic.get stop) do Domain.cpu_relax () done)) in
  build 0;
  while Atomic.get built < a.domains do Domain.cpu_relax () done;
  let build_ms = now_ms () -. t0 in
  let live = ref 0 in
  Array.iteri (fun d l -> live := !live + l + part_n a d * 8) lives;
  let rss_built = rss_bytes () and maps_built = maps_count () in
  let t0 = now_ms () in
  Gc.full_major ();
  let collect_ms = now_ms () -. t0 in
  let sum_before = checksum parts in
  (* start the event ring now, so that only the compaction's events are in it and its
     mapping is already counted in maps_before *)
  Runtime_events.start ();
  let cursor = Runtime_events.create_cursor None in
  ignore (Runtime_events.read_poll cursor callbacks None);
  Hashtbl.reset phase_ms; Hashtbl.reset starts; lost := 0; compact_domains := [];
  let rss_before = rss_bytes () and maps_before = maps_count () in
  let t0 = now_ms () in
  Gc.compact ();
  let compact_ms = now_ms () -. t0 in
  let rss_after = rss_bytes () and maps_after = maps_count () in
  ignore (Runtime_events.read_poll cursor callbacks None);
  let sum_after = checksum parts in
  Atomic.set stop true;
  List.iter Domain.join others;
  Runtime_events.free_cursor cursor;
  let ndom = List.length !compact_domains in
  if ndom < a.domains then
    Printf.eprintf "frag: compaction events seen for %d of %d domains (%d events lost)\n%!"
      ndom a.domains !lost;
  let ph p = Hashtbl.find_opt phase_ms p in
  Printf.printf
    "{\"system\":%s,\"shape\":%s,\"n\":%d,\"domains\":%d,\"keep\":%d,\"skew\":%b,\"seed\":%Ld,\
     \"build_ms\":%.2f,\"collect_ms\":%.2f,\"compact_ms\":%.2f,\"whole_ms\":%.2f,\
     \"compact_phase_ms\":%s,\"evacuate_ms\":%s,\"update_ms\":%s,\"release_ms\":%s,\
     \"phase_domains\":%d,\"events_lost\":%d,\
     \"rss_built\":%d,\"maps_built\":%d,\
     \"rss_before\":%d,\"rss_collected\":%d,\"rss_after\":%d,\
     \"maps_before\":%d,\"maps_collected\":%d,\"maps_after\":%d,\
     \"live_bytes\":%d,\"checksum_before\":%Ld,\"checksum_after\":%Ld,\"ok\":%b}\n%!"
    (json_str a.system) (json_str a.shape) a.n a.domains a.keep a.skew seed build_ms
    collect_ms compact_ms (collect_ms +. compact_ms)
    (fnum (ph Runtime_events.EV_COMPACT)) (fnum (ph EV_COMPACT_EVACUATE))
    (fnum (ph EV_COMPACT_FORWARD)) (fnum (ph EV_COMPACT_RELEASE)) ndom !lost
    rss_built maps_built rss_before rss_before rss_after maps_before maps_before maps_after
    !live sum_before sum_after (sum_before = sum_after);
  ignore (Sys.opaque_identity parts);
  exit (if sum_before = sum_after then 0 else 4)
