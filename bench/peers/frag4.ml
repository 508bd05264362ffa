(* frag(N, D, K) peer for OCaml 4.13 (Debian's ocaml-nox): the sliding compactor.
   No domains: a shape with D > 1 builds its D parts one after the other. No
   Runtime_events: only the whole Gc.compact call is timed. Run with
   OCAMLRUNPARAM=O=1000000 (it also sets max_overhead itself) so that no automatic
   compaction happens before the measured one. *)
open Fragcore

let () =
  Gc.set { (Gc.get ()) with Gc.max_overhead = 1_000_000 };
  let a = parse_args "ocaml-4.13" in
  let seed = match a.seed with Some s -> s | None -> default_seed () in
  Printf.eprintf "frag4: system %s shape %s n %d domains %d keep %d seed %Ld\n%!" a.system
    a.shape a.n a.domains a.keep seed;
  let t0 = now_ms () in
  let parts = Array.make a.domains [||] in
  let live = ref 0 in
  for d = 0 to a.domains - 1 do
    let n = part_n a d in
    let r, l = build_part ~seed ~d ~n ~keep:a.keep in
    parts.(d) <- r;
    live := !live + l + n * 8
  done;
  let build_ms = now_ms () -. t0 in
  let rss_built = rss_bytes () and maps_built = maps_count () in
  let t0 = now_ms () in
  Gc.full_major ();
  let collect_ms = now_ms () -. t0 in
  let sum_before = checksum parts in
  let rss_before = rss_bytes () and maps_before = maps_count () in
  let t0 = now_ms () in
  Gc.compact ();
  let compact_ms = now_ms () -. t0 in
  let rss_after = rss_bytes () and maps_after = maps_count () in
  let sum_after = checksum parts in
  Printf.printf
    "{\"system\":%s,\"shape\":%s,\"n\":%d,\"domains\":%d,\"keep\":%d,\"skew\":%b,\"seed\":%Ld,\
     \"build_ms\":%.2f,\"collect_ms\":%.2f,\"compact_ms\":%.2f,\"whole_ms\":%.2f,\
     \"compact_phase_ms\":null,\"evacuate_ms\":null,\"update_ms\":null,\"release_ms\":null,\
     \"rss_built\":%d,\"maps_built\":%d,\
     \"rss_before\":%d,\"rss_collected\":%d,\"rss_after\":%d,\
     \"maps_before\":%d,\"maps_collected\":%d,\"maps_after\":%d,\
     \"live_bytes\":%d,\"checksum_before\":%Ld,\"checksum_after\":%Ld,\"ok\":%b}\n%!"
    (json_str a.system) (json_str a.shape) a.n a.domains a.keep a.skew seed build_ms
    collect_ms compact_ms (collect_ms +. compact_ms) rss_built maps_built rss_before
    rss_before rss_after maps_before maps_before maps_after !live sum_before sum_after
    (sum_before = sum_after);
  ignore (Sys.opaque_identity parts);
  exit (if sum_before = sum_after then 0 else 4)
