(* top_heap_words after a domain's heap is adopted (issue 10, h10-perf2):
   a domain builds N live blocks and terminates, the main domain keeps them
   and adopts the orphaned pools at the next major cycle.  OCaml's
   top_heap_words sums the domains' maxima and the orphans'; stock moves the
   orphans' maxima into the adopter, so the peak is counted once.  Checks
   top_heap_words <= 1.5 x heap_words (the worker's blocks are nearly all the
   heap, no garbage is made).  Prints one JSON line; exit 0 if ok, 1 if not.
     PREFIX/bin/ocamlopt ocaml/topheap.ml -o topheap && ./topheap [N]
   (N default 1_000_000).  Fails on poolheap before h10-perf2 (5.1M against
   3.1M), passes on stock and after. *)
let () =
  let n = if Array.length Sys.argv > 1 then int_of_string Sys.argv.(1) else 1_000_000 in
  let d = Domain.spawn (fun () -> Array.init n (fun i -> ref i)) in
  let a = Domain.join d in
  Gc.full_major ();
  Gc.full_major ();
  let s = Gc.quick_stat () in
  let ok = float s.Gc.top_heap_words <= 1.5 *. float s.Gc.heap_words in
  Printf.printf "{\"program\":\"topheap\",\"n\":%d,\"heap_words\":%d,\"top_heap_words\":%d,\"ok\":%b}\n%!"
    n s.Gc.heap_words s.Gc.top_heap_words ok;
  ignore (Sys.opaque_identity a);
  exit (if ok then 0 else 1)
