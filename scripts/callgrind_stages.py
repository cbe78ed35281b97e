#!/usr/bin/env python3
"""Instructions per record per pipeline stage, from callgrind profiles.

Reads the callgrind files scripts/profile.sh leaves in a folder (full,
full-small, nodrift, nodrift-small, pt, pt-small: each NAME.callgrind with
NAME.handled and NAME.wall), attributes every instruction to a stage and
writes the breakdown as Markdown.

Attribution. Callgrind records, per function, its own instructions per
source file (code inlined from another file keeps that file: features code
inlined into `score_batch` is counted under worker/src/features/), and per
call edge (caller, call-site file, callee) the instructions spent in the
callee. Instructions at a line belong to the stage of the first rule in
RULES that matches the line's file or the project function holding the line
(read from worker/src, so inlined code is found), else the first that
matches the symbol's name. A function no rule
matches (malloc, memcpy, hash maps, Vec growth, mpsc channels, LZ4, the
locks...) is split among the stages of its callers in proportion to the
instructions each call edge carries, transitively (a fixed point over the
call graph), so the allocator's work for decoding counts as decoding. A
function with no caller and no rule is "other". The stages are disjoint and
add up to the profile's total.

Marginal figures: (stage instructions of the big run - of the small run) /
(records handled by the big run - by the small run). Start-up (model load,
label history, group join, topic creation) is what the small run spent
beyond its records at the marginal rate.

"periodic" collects work driven by wall-clock timers rather than by records
(librdkafka's timers and statistics, consumer-group heartbeats, the health
watch): under valgrind a run lasts ~30-100x
longer than at full speed, so per record these would be inflated by that
factor. They are shown per wall-clock second and, at the worker's native
rate (native.rate, measured by profile.sh without valgrind), per record;
they are left out of the per-record totals. So is the re-read of the input
at start (messages parsed beyond one per record, counted from the calls of
rd_kafka_msgset_reader_msg_v2).

    callgrind_stages.py --dir DIR [--out FILE] [--command TEXT]
    callgrind_stages.py --explain FILE.callgrind [--stage STAGE]
                        (stage totals of one profile, and STAGE's top code)
"""

import argparse
import collections
import os
import re
import sys

# (stage, "fn" | "file", regex). First match wins; file rules are tried on
# the file of the instructions (inlined code keeps its own file), fn rules on
# the function's demangled name (without callgrind's 'N recursion suffix).
RULES = [
    # --- wall-clock driven
    ("periodic", "fn", r"^rd_kafka_timers_run$|^rd_kafka_stats_emit|^rd_kafka_cgrp_heartbeat|"
                       r"^rd_kafka_cgrp_serve$|^rd_kafka_metadata_refresh|native_stats_cb|"
                       r"::stats(_raw)?$|riskstream::pipeline::Watch|"
                       r"riskstream::pipeline::health::"),
    # --- offsets (store per record, commit)
    ("offsets/commit", "file", r"/worker/src/commit/"),
    ("offsets/commit", "fn", r"riskstream::commit::|OffsetStore|rd_kafka_offsets?_store|"
                             r"^rd_kafka_commit|rd_kafka_cgrp_.*commit|rd_kafka_handle_OffsetCommit|"
                             r"rd_kafka_offset_commit|rdkafka::consumer::.*::commit|store_offset"),
    # --- drift sidecar (its own thread, producer and slices consumer)
    ("drift", "file", r"/worker/src/drift/|/worker/src/codec/drift\.rs"),
    ("drift", "fn", r"riskstream::drift::|riskstream::codec::drift::|DriftSender|tx_fingerprint"),
    # --- metrics
    ("metrics", "file", r"/worker/src/metrics/"),
    ("metrics", "fn", r"riskstream::metrics::|^metrics::|metrics_exporter_prometheus|"
                      r"metrics_util|StateCapsHit|count_version|publish_size"),
    # --- label reader and labels applied to the feature state
    ("labels", "file", r"/worker/src/source/labels\.rs"),
    ("labels", "fn", r"LabelReader|Codec::decode_label|Scoring::take_labels|"
                     r"Scoring::apply_pending_labels|Scoring::load_label_history|"
                     r"Scoring::wait_for_labels|Scoring::report_labels_behind"),
    # --- guard (bounds of a decoded transaction)
    ("guard", "file", r"/worker/src/source/guard\.rs"),
    ("guard", "fn", r"InputGuard"),
    # --- features
    ("features", "file", r"/worker/src/features/"),
    ("features", "fn", r"riskstream::features::|FeatureEngine|scoring::features_of|"
                       r"scoring::apply_labels?$|count_cap_hits"),
    # --- inference
    ("inference", "file", r"/worker/src/model/"),
    ("inference", "fn", r"riskstream::model::|^burn|^<burn|burn_flex|burn_tensor|burn_backend|"
                        r"burn_dispatch|burn_nn|BatchScores|^gemm|^<gemm|matrixmultiply|macerator"),
    # --- changelog (changed customers encoded and sent; restore at start)
    ("changelog", "file", r"/worker/src/state/"),
    ("changelog", "fn", r"riskstream::state::|Scoring::send_drafts|scoring::State::maybe_drain|"
                        r"Codec::.*customer_state|Changelog"),
    # --- state bookkeeping (dirty set, eviction clock, transaction tracker)
    ("state bookkeeping", "file", r"/worker/src/scoring/transaction\.rs"),
    ("state bookkeeping", "fn", r"riskstream::scoring::State::|advance_eviction_clock|note_changed|"
                                r"Scoring::end_transaction_for_state_change|Scoring::maybe_commit"),
    # --- decode (Avro in, structural guard of the datum)
    ("decode", "file", r"/worker/src/codec/guard\.rs"),
    ("decode", "fn", r"Codec::decode_transaction|decode_transaction_generic|validate_transaction|"
                     r"riskstream::codec::guard::|Source::decode$"),
    # --- encode (scored records)
    ("encode", "fn", r"Codec::encode_scored|scoring::Assembly|scoring::verdict$"),
    # --- batching: hand-over source -> scoring, the batcher, the scoring loop
    ("batching", "file", r"/worker/src/scoring/batcher\.rs"),
    ("batching", "fn", r"riskstream::scoring::batcher::|riskstream::source::Chunk|"
                       r"riskstream::scoring::Scoring::run$|riskstream::scoring::score_batch$|"
                       r"Scoring::send_dead|scoring::unpack"),
    # --- produce: the sink and librdkafka's producer side
    ("produce", "file", r"/worker/src/sink/"),
    ("produce", "fn", r"rdkafka::producer::|ThreadedProducer|BaseProducer|FutureProducer|"
                      r"^rd_kafka_broker_producer_serve|^rd_kafka_toppar_producer_serve|"
                      r"^rd_kafka_ProduceRequest|^rd_kafka_msgset_create_ProduceRequest|"
                      r"^rd_kafka_msgset_writer|^rd_kafka_handle_Produce|^rd_kafka_produce|"
                      r"^rd_kafka_msg_new|^rd_kafka_msg_partitioner|^rd_kafka_dr_|^rd_kafka_poll$|"
                      r"^rd_kafka_flush|^rd_kafka_msgq_|^rd_kafka_idemp_|^rd_kafka_txn|"
                      r"^rd_kafka_msgbatch|^rd_kafka_msg_sticky_partition|delivery_cb|"
                      r"ProducerContext"),
    # --- consume: librdkafka's fetch (broker threads), then the poll side
    ("consume: fetch", "fn", r"^rd_kafka_broker_consumer_serve|^rd_kafka_broker_fetch|^rd_kafka_fetch|"
                             r"^rd_kafka_msgset_reader|^rd_kafka_toppar_fetch"),
    ("consume", "file", r"/worker/src/source/|/worker/src/tools/passthrough\.rs"),
    ("consume", "fn", r"rdkafka::consumer::|BaseConsumer|StreamConsumer|BorrowedMessage|"
                      r"^rd_kafka_consume|^rd_kafka_consumer_poll|"
                      r"^rd_kafka_message_destroy|^rd_kafka_queue_poll|"
                      r"riskstream::source::|riskstream::tools::passthrough"),
    # --- what is left
    ("librdkafka (shared)", "fn", r"^rd_kafka_broker_thread_main$|^rd_kafka_thread_main$|"
                                  r"^rd_kafka_broker_serve$|^rd_kafka_new$"),
    ("runtime (tokio)", "fn", r"^tokio::|^<tokio::"),
    ("logging", "fn", r"^tracing|^<tracing"),
]
COMPILED = [(s, k, re.compile(r)) for s, k, r in RULES]
ORDER = [
    "consume: fetch", "consume", "decode", "guard", "features", "state bookkeeping", "batching",
    "inference", "encode", "produce", "offsets/commit", "changelog", "drift",
    "metrics", "labels", "librdkafka (shared)", "runtime (tokio)", "logging", "other",
]
PERIODIC = "periodic"
REREAD = "consume: fetch, re-read at start"
EXCLUDED = (PERIODIC, REREAD, "_reads")
NOTES = """## How the instructions were attributed

- Instructions (Ir) are user-space instructions of every thread of the
  process (`--separate-threads=no` sums them: tokio workers, the blocking
  source and scoring threads, the drift sidecar, librdkafka's broker and
  main threads of every client). The kernel's work (socket reads and
  writes, futexes) is not counted, so librdkafka's share of real CPU time
  is larger than its share here.
- A stage is a set of rules (scripts/callgrind_stages.py, RULES) on the
  source file of the instructions (code inlined from another file keeps its
  file and line), the project function holding that line (read from
  worker/src at the profiled commit), or the symbol's name. consume:
  librdkafka's consumer side (fetch, message-set parsing, LZ4
  decompression via its callers, the consumer queue, rust-rdkafka's poll)
  and worker/src/source (the poll loop, routing, hand-over) of the input,
  label and slices consumers; decode: `Codec::decode_transaction`,
  `Source::decode`, the datum guard; guard: `InputGuard`; features:
  worker/src/features, `features_of`, labels applied to the feature state;
  state bookkeeping: `scoring::State` (dirty set, eviction clock) and the
  exactly-once tracker; batching: the batcher, the hand-over chunks, the
  scoring loop and `score_batch` itself; inference: worker/src/model and
  burn; encode: `encode_scored_from` and the assembly of scored records;
  produce: worker/src/sink and librdkafka's producer side (produce calls,
  message-set writing, LZ4 compression via its callers, delivery reports)
  of every producer; offsets/commit: worker/src/commit, offset stores and
  commits; changelog: worker/src/state and the drafts sent; drift:
  worker/src/drift, the drift codec, the sender; metrics:
  worker/src/metrics and the metrics crates; labels: the label reader and
  the label wait; librdkafka (shared): broker-thread I/O and ops not under
  a consumer or producer path; runtime: tokio's scheduler.
- Code no rule matches (the allocator, memcpy, hash maps, channels, locks,
  clocks) is split among its callers' stages in proportion to the
  instructions each call carries, up the call graph. Library code inlined
  into a project function is counted by the symbol it was inlined into, so
  e.g. hash-map code of the feature engine inlined into `score_batch`
  lands in batching; the split is exact for stages that are their own
  symbols (inference, most of decode, drift, librdkafka).
- librdkafka's threads of the output producer, the DLQ/changelog producer
  and the drift producer cannot be told apart in one summed profile, nor
  those of the input, label and slices consumers: the drift sidecar's
  whole cost is therefore also given as the difference of the two worker
  profiles.
- The labels row is the label reader and the scoring thread's label
  checks; the label history itself (67,248 labels) is start-up.
- Marginal per record: each configuration runs twice, over 20,000 and
  over 1,000 records; the difference removes start-up (model load and
  warm-up, the label history of a week, group join, topic creation,
  changelog restore, the final drift report and commit).
- Under valgrind the worker runs ~30-100x slower than at full speed, so
  work driven by wall-clock timers is that much more frequent per record:
  it is the periodic row, per second, not in the per-record total
  (librdkafka's timers and statistics, heartbeats, the 100 ms health
  watch). The changelog flushes every PROFILE_FLUSH_MS (60 s) instead of
  every second for the same reason. Producer batching (linger.ms=2) and
  fetch sizes also differ from full speed: the produce and consume rows
  are for the batch sizes seen under valgrind, like the passthrough's.
- The input is parsed twice at start (see the re-read row): librdkafka
  fetches the newly assigned partitions while their changelog is restored,
  and the seek after the restore (`Source::resume_at`) drops the fetched
  messages and reads them again. Its cost grows with the backlog (up to
  queued.min.messages per partition), so with 20,000 records it would
  double the fetch row; callgrind's call count of
  rd_kafka_msgset_reader_msg_v2 measures the factor and the share above
  one parse per record is moved to that row.
"""
NAME_RE = re.compile(r"^\((\d+)\)(?: (.*))?$")


PARSE_FN = "rd_kafka_msgset_reader_msg_v2"  # called once per message parsed from a fetch


def parse(path):
    """(self, edges): self[(fn, file, item)] = Ir; edges[(caller, file, item, callee)] =
    inclusive Ir. item: the Rust function of the project's source that holds
    the line (None outside worker/src)."""
    names = {"fl": {}, "fn": {}, "ob": {}}
    kind_of = {"fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl", "cfl": "fl",
               "fn": "fn", "cfn": "fn", "ob": "ob", "cob": "ob"}

    def name(kind, text):
        m = NAME_RE.match(text)
        if not m:
            return text
        table = names[kind_of[kind]]
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), "?")

    self_cost = collections.Counter()
    edges = collections.Counter()
    parse.messages = 0
    fl = fi = fn = cfn = None
    pending_call = False
    last = 0  # positions are relative to the previous cost line's

    def position(tok):
        if tok == "*":
            return last
        if tok[0] in "+-":
            return last + int(tok)
        return int(tok)

    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line or line[0] == "\n":
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                if len(parts) < 2:
                    pending_call = False
                    continue
                cost = int(parts[1])
                last = position(parts[0])
                item = source_item(fi, last)
                if pending_call:
                    edges[(fn, fi, item, cfn)] += cost
                    pending_call = False
                else:
                    self_cost[(fn, fi, item)] += cost
                continue
            key, _, val = line.rstrip("\n").partition("=")
            if key == "fl":
                fl = name("fl", val)
                fi = fl
            elif key in ("fi", "fe"):
                fi = name(key, val)
            elif key == "fn":
                fn = name("fn", val)
                fi = fl
            elif key == "cfn":
                cfn = name("cfn", val)
            elif key in ("cfi", "cfl", "ob", "cob"):
                name(key, val)
            elif key == "calls":
                pending_call = True
                if cfn == PARSE_FN:
                    parse.messages += int(val.split()[0])
    return self_cost, edges


SRC_MARK = "/worker/src/"
_items = {}
FN_RE = re.compile(r"^(\s*)(?:pub(?:\([^)]*\))? )?(?:const )?(?:async )?(?:unsafe )?(?:extern \"C\" )?fn (\w+)")
IMPL_RE = re.compile(r"^(\s*)(?:unsafe )?impl\b(?:<[^{]*?>)?\s+(?:[^{]*?\bfor\s+)?(?:&(?:'\w+ )?)?([A-Za-z_][\w:]*)")
MOD_RE = re.compile(r"^(\s*)(?:pub(?:\([^)]*\))? )?mod (\w+)\s*\{")


def item_table(path):
    """Line number -> "riskstream::module::Type::fn" of the innermost function
    holding it, from the rustfmt layout (an item's closing brace is at its
    own indentation)."""
    if path in _items:
        return _items[path]
    table = {}
    try:
        lines = open(path, encoding="utf-8").read().split("\n")
    except OSError:
        _items[path] = table
        return table
    rel = path.split(SRC_MARK, 1)[1][:-3]
    module = "riskstream::" + re.sub(r"/(mod|lib|main)$|^(lib|main)$", "", rel).replace("/", "::")
    module = module.rstrip(":")

    def close_of(start, indent):
        if lines[start].rstrip().endswith("}") and "{" in lines[start]:
            return start
        end_mark = indent + "}"
        for j in range(start + 1, len(lines)):
            if lines[j].rstrip() == end_mark or lines[j].startswith(end_mark + " ") or lines[j].rstrip() in (end_mark + ";", end_mark + ")"):
                return j
        return len(lines) - 1

    scopes = []  # (name, first, last)
    stack = []
    for i, line in enumerate(lines):
        while stack and i > stack[-1][2]:
            stack.pop()
        m = IMPL_RE.match(line)
        if m and line.rstrip().endswith("{"):
            typ = m.group(2).split("::")[-1]
            stack.append(("impl", typ, close_of(i, m.group(1))))
            continue
        m = MOD_RE.match(line)
        if m:
            stack.append(("mod", m.group(2), close_of(i, m.group(1))))
            continue
        m = FN_RE.match(line)
        if m:
            # the body starts at the first line ending in "{" at or after it
            j = i
            while j < len(lines) and not lines[j].rstrip().endswith("{") and not lines[j].rstrip().endswith(";"):
                j += 1
            if j >= len(lines) or lines[j].rstrip().endswith(";"):
                continue
            end = close_of(j, m.group(1)) if j != i else close_of(i, m.group(1))
            outer = [n for k, n, _ in stack if k in ("mod", "impl")]
            # nested fns keep their own name
            name = "::".join([module] + outer + [m.group(2)])
            scopes.append((name, i + 1, end + 1))
    # innermost (shortest) scope per line
    for name, a, b in sorted(scopes, key=lambda t: -(t[2] - t[1])):
        for ln in range(a, b + 1):
            table[ln] = name
    _items[path] = table
    return table


def source_item(file, line):
    if not file or SRC_MARK not in file or not file.endswith(".rs"):
        return None
    return item_table(file).get(line)


def strip(fn):
    return re.sub(r"'\d+$", "", fn or "")


_rule_cache = {}


def rule_stage(fn, file, item=None):
    """The stage of instructions of function fn at a line of file (item: the
    project's source function holding that line), or None."""
    k = (fn, file, item)
    if k in _rule_cache:
        return _rule_cache[k]
    stage = None
    # the file, then the source function the line is in (inlined code keeps
    # both), then the symbol's own name
    for s, kind, rx in COMPILED:
        target = file if kind == "file" else item
        if target and rx.search(target):
            stage = s
            break
    if stage is None:
        base = strip(fn)
        for s, kind, rx in COMPILED:
            if kind == "fn" and rx.search(base):
                stage = s
                break
    _rule_cache[k] = stage
    return stage


def attribute(self_cost, edges):
    """Instructions per stage."""
    fns = {k[0] for k in self_cost} | {e[0] for e in edges} | {e[3] for e in edges}
    incoming = collections.defaultdict(list)
    for (caller, file, item, callee), w in edges.items():
        if caller != callee and w > 0:
            incoming[callee].append((caller, file, item, w))
    dist = {}  # inherited stage shares of unmatched functions
    # A function's own stage by its name alone.
    own = {fn: rule_stage(fn, None) for fn in fns}

    def ctx(fn, file, item=None):
        s = rule_stage(fn, file, item)
        if s is not None:
            return {s: 1.0}
        return dist.get(fn, {"other": 1.0})

    free = [fn for fn in fns if own[fn] is None]
    for _ in range(60):
        changed = 0.0
        for fn in free:
            ins = incoming.get(fn)
            if not ins:
                new = {"other": 1.0}
            else:
                total = sum(w for *_, w in ins)
                new = collections.defaultdict(float)
                for caller, file, item, w in ins:
                    for s, x in ctx(caller, file, item).items():
                        new[s] += x * w / total
            old = dist.get(fn, {})
            changed = max(changed, max((abs(new.get(s, 0) - old.get(s, 0)) for s in set(new) | set(old)), default=0))
            dist[fn] = dict(new)
        if changed < 1e-6:
            break
    attribute.ctx = ctx
    stages = collections.Counter()
    detail = collections.defaultdict(collections.Counter)
    for (fn, file, item), c in self_cost.items():
        where = item or strip(fn)
        for s, x in ctx(fn, file, item).items():
            stages[s] += c * x
            detail[s][where] += c * x
    attribute.detail = detail
    # inclusive Ir of the project's functions (by symbol), with their stage
    incl = collections.Counter()
    for (fn, file, item), c in self_cost.items():
        if fn and fn.startswith("riskstream::"):
            incl[fn] += c
    for (caller, file, item, callee), w in edges.items():
        if caller != callee and caller and caller.startswith("riskstream::"):
            incl[caller] += w
    attribute.inclusive = {fn: (c, own.get(fn)) for fn, c in incl.items()}
    return stages


def short_file(file):
    if not file:
        return "?"
    for mark in ("/library/", "/src/", "/sysdeps/", "/out/src/"):
        if mark in file:
            return file.rsplit(mark, 1)[0].rsplit("/", 1)[-1] + mark + file.rsplit(mark, 1)[1]
    return file.rsplit("/", 1)[-1]


def explain(path, stage=None, n=25):
    """The (function, file) pairs that put the most instructions into stages."""
    self_cost, edges = parse(path)
    stages = attribute(self_cost, edges)
    total = sum(self_cost.values())
    for s, c in stages.most_common():
        print(f"{s:24s} {c:15,.0f} {100 * c / total:5.1f} %")
    if stage is None:
        return
    contrib = collections.Counter()
    for (fn, file, item), c in self_cost.items():
        x = attribute.ctx(fn, file, item).get(stage, 0)
        if x:
            contrib[(strip(fn)[:100], (item or (file or "")[-45:]))] += c * x
    for (fn, file), c in contrib.most_common(n):
        print(f"  {c:13,.0f}  {fn}  [{file}]")


def load(folder, name):
    p = os.path.join(folder, name)
    self_cost, edges = parse(p + ".callgrind")
    stages = attribute(self_cost, edges)
    handled = int(open(p + ".handled").read().split()[0])
    wall = float(open(p + ".wall").read().split()[0])
    return {"stages": stages, "handled": handled, "wall": wall, "total": sum(self_cost.values()),
            "detail": attribute.detail, "inclusive": attribute.inclusive, "parsed": parse.messages}


def marginal(big, small):
    dn = big["handled"] - small["handled"]
    dt = big["wall"] - small["wall"]
    if dn <= 0:
        sys.exit(f"callgrind_stages: the big run handled {big['handled']} records, the small one {small['handled']}: nothing to difference")
    per = {}
    for s in set(big["stages"]) | set(small["stages"]):
        d = big["stages"].get(s, 0) - small["stages"].get(s, 0)
        per[s] = d / dt if s == PERIODIC else d / dn
    # Messages librdkafka parsed per record handled: above 1 when a fetch is
    # thrown away and read again (the partitions fetched at assignment, then
    # sought back after the changelog restore). The re-read share of the
    # fetch stage is start-up work that grows with the backlog (up to
    # queued.min.messages per partition), not per-record work: its own row.
    reads = (big["parsed"] - small["parsed"]) / dn
    if reads > 1.0:
        fetch = per.get("consume: fetch", 0)
        per["consume: fetch"] = fetch / reads
        per[REREAD] = fetch - fetch / reads
    per["_reads"] = reads
    data_total = sum(v for s, v in per.items() if s not in EXCLUDED)
    startup = small["total"] - small["stages"].get(PERIODIC, 0) - data_total * small["handled"]
    return per, data_total, startup, dn


def fmt(x):
    return f"{x:,.0f}"


def main():
    ap = argparse.ArgumentParser(description="Instructions per record per stage from scripts/profile.sh's callgrind files.")
    ap.add_argument("--dir")
    ap.add_argument("--explain", help="a callgrind file: stage totals (and --stage's top functions)")
    ap.add_argument("--stage")
    ap.add_argument("--out")
    ap.add_argument("--command", default="scripts/profile.sh")
    args = ap.parse_args()
    if args.explain:
        explain(args.explain, args.stage)
        return
    d = args.dir
    meta = {}
    if os.path.exists(os.path.join(d, "meta.txt")):
        for line in open(os.path.join(d, "meta.txt")):
            k, _, v = line.strip().partition("=")
            meta[k] = v
    rate = None
    if os.path.exists(os.path.join(d, "native.rate")):
        try:
            rate = float(open(os.path.join(d, "native.rate")).read().split()[0])
        except (ValueError, IndexError):
            rate = None
    runs = {}
    for cfg in ("full", "nodrift", "pt"):
        big, small = load(d, cfg), load(d, cfg + "-small")
        runs[cfg] = (big, small) + marginal(big, small)
    full, nd, pt = (runs[c][2] for c in ("full", "nodrift", "pt"))
    ft, ndt, ptt = (runs[c][3] for c in ("full", "nodrift", "pt"))
    lines = []
    w = lines.append
    w("# Where riskstream's CPU goes: instructions per record per stage (callgrind)")
    w("")
    w(f"Command: `{args.command}`  ")
    w(f"Commit: `{meta.get('commit', '?')}`; binary `{meta.get('binary', '?')}` (built {meta.get('binary_mtime', '?')}); "
      f"{meta.get('valgrind', 'valgrind')}; {meta.get('machine', '')}  ")
    w(f"Worker flags: `{meta.get('worker_flags', '?')}`; callgrind files kept in `{d}` "
      f"(`callgrind_annotate --inclusive=yes FILE` shows the same inclusive counts).  ")
    w(f"Records: {runs['full'][0]['handled']} vs {runs['full'][1]['handled']} handled (full), "
      f"{runs['nodrift'][0]['handled']} vs {runs['nodrift'][1]['handled']} (drift off), "
      f"{runs['pt'][0]['handled']} vs {runs['pt'][1]['handled']} (passthrough); figures are the difference "
      f"between the two runs of each, per record (marginal: start-up excluded).")
    w("")
    w("| stage | full worker, Ir/record | % of full | drift off, Ir/record | passthrough, Ir/record | full − passthrough |")
    w("|---|---:|---:|---:|---:|---:|")
    for s in ORDER:
        a, b, c = full.get(s, 0), nd.get(s, 0), pt.get(s, 0)
        if max(abs(a), abs(b), abs(c)) < 0.5:
            continue
        w(f"| {s} | {fmt(a)} | {100 * a / ft:.1f} % | {fmt(b)} | {fmt(c)} | {fmt(a - c)} |")
    w(f"| **total per record** | **{fmt(ft)}** | 100 % | **{fmt(ndt)}** | **{fmt(ptt)}** | **{fmt(ft - ptt)}** |")
    w(f"| {REREAD} (not in the total) | {fmt(full.get(REREAD, 0))} | – | {fmt(nd.get(REREAD, 0))} | "
      f"{fmt(pt.get(REREAD, 0))} | – |")
    w(f"| messages parsed by librdkafka per record handled | {full['_reads']:.2f} | – | {nd['_reads']:.2f} | {pt['_reads']:.2f} | – |")
    pf, pn, pp = full.get(PERIODIC, 0), nd.get(PERIODIC, 0), pt.get(PERIODIC, 0)
    w(f"| periodic (wall-clock timers), Ir per second | {fmt(pf)} | – | {fmt(pn)} | {fmt(pp)} | – |")
    if rate:
        w(f"| periodic at the native rate ({rate:,.0f} records/s), Ir/record | {fmt(pf / rate)} | – | {fmt(pn / rate)} | – | – |")
    w(f"| start-up (small run beyond its records), Ir | {fmt(runs['full'][4])} | – | {fmt(runs['nodrift'][4])} | {fmt(runs['pt'][4])} | – |")
    w("")
    w(f"Drift sidecar, measured as full − drift off: {fmt(ft - ndt)} Ir/record "
      f"({100 * (ft - ndt) / ft:.1f} % of the full worker); attributed by function to `drift`: "
      f"{fmt(full.get('drift', 0))} Ir/record; the rest of the difference is drift work that "
      f"other rows hold (per row, full − drift off: "
      + ", ".join(f"{s} {fmt(full.get(s, 0) - nd.get(s, 0))}" for s in ORDER
                  if s != "drift" and abs(full.get(s, 0) - nd.get(s, 0)) >= 50)
      + "): the drift gauges in metrics, the drift sample gathered while assembling a batch, "
      "its producer and slices consumer in librdkafka.")
    w("")
    # the biggest stages beyond the floor, with their biggest functions
    beyond = sorted(((full.get(s, 0) - pt.get(s, 0), s) for s in ORDER), reverse=True)
    w("## Where the instructions beyond the passthrough go")
    w("")
    w("The six stages that add the most to the passthrough's instructions, largest first, "
      "with the functions that spend them in the full worker (marginal, as above). Own "
      "instructions are by the project's source function holding the line where code was "
      "inlined, else by symbol.")
    w("")
    big, small, _, _, _, dn = runs["full"]
    for extra, s in beyond[:6]:
        w(f"**{s}**: {fmt(full.get(s, 0))} Ir/record ({fmt(extra)} beyond the passthrough's)")
        w("")
        rows = collections.Counter()
        for k, c in big["detail"].get(s, {}).items():
            rows[k] += c
        for k, c in small["detail"].get(s, {}).items():
            rows[k] -= c
        top = [f"{fmt(c / dn)} `{k[:100]}`" for k, c in rows.most_common(6) if c / dn >= 20]
        if top:
            w("- own instructions (with what their callees that no rule claims spent, e.g. malloc): " + "; ".join(top))
        incl = collections.Counter()
        for fn, (c, st) in big["inclusive"].items():
            if st == s:
                incl[strip(fn)] += c
        for fn, (c, st) in small["inclusive"].items():
            if st == s:
                incl[strip(fn)] -= c
        top = [f"{fmt(c / dn)} `{k[:100]}`" for k, c in incl.most_common(8) if c / dn >= 20]
        if top:
            w("- project functions of the stage, inclusive of everything they call: " + "; ".join(top))
        w("")
    w(NOTES)
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
