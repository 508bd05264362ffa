(* Binary trees on D domains (issue 10's multi-domain allocation program), for
   comparing OCaml runtimes: the same program compiled with each prefix's ocamlopt.
     bintrees [DEPTH [DOMAINS]]    (defaults 20 and 2)
   A long-lived tree of depth DEPTH is kept for the whole run; for each depth
   d = 4, 6, ..., DEPTH, 2^(DEPTH - d + 4) trees of depth d are built and checked,
   the iterations split evenly across the domains.  Prints one JSON line: the
   wall time, the checksum (node count, the same on every runtime) and ok. *)

type tree = Leaf | Node of tree * tree

let rec make d = if d = 0 then Node (Leaf, Leaf) else Node (make (d - 1), make (d - 1))

let rec check = function Leaf -> 0 | Node (l, r) -> 1 + check l + check r

let () =
  let depth = if Array.length Sys.argv > 1 then int_of_string Sys.argv.(1) else 20 in
  let domains = if Array.length Sys.argv > 2 then int_of_string Sys.argv.(2) else 2 in
  let t0 = Unix.gettimeofday () in
  let long_lived = make depth in
  let work k () =
    let sum = ref 0 in
    let d = ref 4 in
    while !d <= depth do
      let iters = 1 lsl (depth - !d + 4) in
      (* this domain's share of the iterations: k, k + domains, ... *)
      let i = ref k in
      while !i < iters do
        sum := !sum + check (make !d);
        i := !i + domains
      done;
      d := !d + 2
    done;
    !sum in
  let others = List.init (domains - 1) (fun k -> Domain.spawn (work (k + 1))) in
  let mine = work 0 () in
  let total = List.fold_left (fun s d -> s + Domain.join d) mine others in
  let total = total + check long_lived in
  let ms = (Unix.gettimeofday () -. t0) *. 1000. in
  (* expected: the long-lived tree plus every iteration's tree *)
  let expect = ref ((1 lsl (depth + 1)) - 1) in
  let d = ref 4 in
  while !d <= depth do
    expect := !expect + (1 lsl (depth - !d + 4)) * ((1 lsl (!d + 1)) - 1);
    d := !d + 2
  done;
  Printf.printf "{\"program\":\"bintrees\",\"depth\":%d,\"domains\":%d,\"ms\":%.1f,\"nodes\":%d,\"ok\":%b}\n%!"
    depth domains ms total (total = !expect);
  exit (if total = !expect then 0 else 4)
