(* Shared core of the OCaml frag(N, D, K) peers (frag.ml for OCaml 5.3, frag4.ml for 4.13).
   It builds one domain's part of the shape exactly like frag_c.c: the same splitmix64
   generator, the same draws in the same order, so that for a given seed the graph and its
   checksum are the same as the C peers'. Compiles with OCaml >= 4.08. *)

(* splitmix64, state kept in a Bytes so that the Int64 arithmetic stays unboxed *)
type rng = Bytes.t

let rng_for seed d : rng =
  let b = Bytes.create 8 in
  Bytes.set_int64_le b 0
    (Int64.logxor seed (Int64.mul 0xD1B54A32D192ED03L (Int64.of_int (d + 1))));
  b

let next (r : rng) =
  let s = Int64.add (Bytes.get_int64_le r 0) 0x9E3779B97F4A7C15L in
  Bytes.set_int64_le r 0 s;
  let z = Int64.mul (Int64.logxor s (Int64.shift_right_logical s 30)) 0xBF58476D1CE4E5B9L in
  let z = Int64.mul (Int64.logxor z (Int64.shift_right_logical z 27)) 0x94D049BB133111EBL in
  Int64.logxor z (Int64.shift_right_logical z 31)

(* uniform in [0, n): 53 random bits modulo n *)
let uniform r n = Int64.to_int (Int64.shift_right_logical (next r) 11) mod n

(* 70% 2; 15% 3-4; 10% 5-8; 4% 9-32; 1% 33-128 *)
let fields r =
  let b = uniform r 100 in
  if b < 70 then 2
  else if b < 85 then 3 + uniform r 2
  else if b < 95 then 5 + uniform r 4
  else if b < 99 then 9 + uniform r 24
  else 33 + uniform r 96

open Bigarray

(* Build one part: root array R of n fields, n blocks, then R.(i) <- 0 for the dropped
   ones. Returns R and the bytes of the kept blocks ((fields + 1) * 8 each). The index
   lists are Bigarrays: outside the OCaml heap, freed by the next major collection. *)
let build_part ~seed ~d ~n ~keep : Obj.t array * int =
  let rng = rng_for seed d in
  let r : Obj.t array = Array.make n (Obj.repr 0) in
  let kept_l = Array1.create int32 c_layout (max n 1) in
  let drop_l = Array1.create int32 c_layout (max n 1) in
  let nk = ref 0 and nd = ref 0 and live = ref 0 in
  for i = 0 to n - 1 do
    let w = fields rng in
    let kept = uniform rng 1000 < keep in
    let b = Obj.new_block 0 w in
    let lst = if kept then kept_l else drop_l in
    let cnt = if kept then !nk else !nd in
    for j = 0 to w - 1 do
      if uniform rng 2 = 1 && cnt > 0 then begin
        let k = Int32.to_int (Array1.unsafe_get lst (uniform rng cnt)) in
        Obj.set_field b j (Array.unsafe_get r k)
      end else Obj.set_field b j (Obj.repr i)
    done;
    Array.unsafe_set r i b;
    if kept then begin
      Array1.unsafe_set kept_l !nk (Int32.of_int i); incr nk;
      live := !live + (w + 1) * 8
    end else begin
      Array1.unsafe_set drop_l !nd (Int32.of_int i); incr nd
    end
  done;
  for k = 0 to !nd - 1 do
    Array.unsafe_set r (Int32.to_int (Array1.unsafe_get drop_l k)) (Obj.repr 0)
  done;
  (r, !live)

let mask53 = Int64.sub (Int64.shift_left 1L 53) 1L
let mix h x = Int64.mul (Int64.logxor h x) 0x100000001B3L

(* Checksum of every surviving block in root order: field count, immediates, and the
   field count of each pointed-to block. *)
let checksum (parts : Obj.t array array) =
  let h = Bytes.create 8 in
  Bytes.set_int64_le h 0 0xCBF29CE484222325L;
  let add x = Bytes.set_int64_le h 0 (mix (Bytes.get_int64_le h 0) x) in
  Array.iter (fun r ->
    Array.iter (fun v ->
      if Obj.is_block v then begin
        let w = Obj.size v in
        add (Int64.of_int w);
        for j = 0 to w - 1 do
          let f = Obj.field v j in
          if Obj.is_int f then add (Int64.of_int (Obj.obj f : int))
          else add (Int64.of_int (Obj.size f))
        done
      end) r) parts;
  Int64.logand (Bytes.get_int64_le h 0) mask53

let now_ms () = Unix.gettimeofday () *. 1000.

let rss_bytes () =
  try
    let ic = open_in "/proc/self/status" in
    let rec loop () =
      match input_line ic with
      | l when String.length l > 6 && String.sub l 0 6 = "VmRSS:" ->
        let v = String.trim (String.sub l 6 (String.length l - 6)) in
        let kb = Scanf.sscanf v "%d" (fun x -> x) in
        kb * 1024
      | _ -> loop ()
      | exception End_of_file -> -1
    in
    let r = loop () in
    close_in ic; r
  with _ -> -1

let maps_count () =
  try
    let ic = open_in "/proc/self/maps" in
    let n = ref 0 in
    (try while true do ignore (input_line ic); incr n done with End_of_file -> ());
    close_in ic; !n
  with _ -> -1

(* command line: --shape W1|W2|W50|Wskew|Wbig, --n, --domains, --keep, --skew, --seed,
   --system *)
type args = {
  mutable shape : string; mutable n : int; mutable domains : int; mutable keep : int;
  mutable skew : bool; mutable seed : int64 option; mutable system : string;
}

let parse_args default_system =
  let a = { shape = "custom"; n = 4_000_000; domains = 1; keep = 100; skew = false;
            seed = None; system = default_system } in
  let explicit = ref false in
  let usage () =
    prerr_endline "usage: frag [--shape W1|W2|W50|Wskew|Wbig] [--n N] [--domains D] \
                   [--keep K] [--skew] [--seed S] [--system NAME]";
    exit 1 in
  let argv = Sys.argv in
  let i = ref 1 in
  let arg () = incr i; if !i >= Array.length argv then usage (); argv.(!i) in
  while !i < Array.length argv do
    (match argv.(!i) with
     | "--shape" ->
       let s = arg () in
       a.shape <- s;
       (match s with
        | "W1" -> a.n <- 4_000_000; a.domains <- 1; a.keep <- 100; a.skew <- false
        | "W2" -> a.n <- 2_000_000; a.domains <- 2; a.keep <- 100; a.skew <- false
        | "W50" -> a.n <- 4_000_000; a.domains <- 1; a.keep <- 500; a.skew <- false
        | "Wskew" -> a.n <- 4_000_000; a.domains <- 2; a.keep <- 100; a.skew <- true
        | "Wbig" -> a.n <- 20_000_000; a.domains <- 1; a.keep <- 100; a.skew <- false
        | _ -> usage ())
     | "--n" -> a.n <- int_of_float (float_of_string (arg ())); explicit := true
     | "--domains" -> a.domains <- int_of_string (arg ()); explicit := true
     | "--keep" -> a.keep <- int_of_string (arg ()); explicit := true
     | "--skew" -> a.skew <- true; explicit := true
     | "--seed" -> a.seed <- Some (Int64.of_string (arg ()))
     | "--system" -> a.system <- arg ()
     | _ -> usage ());
    incr i
  done;
  if !explicit then a.shape <- "custom";
  if a.domains < 1 || a.n < 0 || a.keep < 0 || a.keep > 1000 then usage ();
  a

let default_seed () =
  let r = rng_for (Int64.of_float (Unix.gettimeofday () *. 1e6)) (Unix.getpid ()) in
  Int64.logand (next r) mask53

let part_n a d = if a.skew && d > 0 then 0 else a.n

let json_str s = Printf.sprintf "%S" s

let fnum f = match f with None -> "null" | Some x -> Printf.sprintf "%.2f" x
