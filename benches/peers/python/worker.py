#!/usr/bin/env python3
"""The riskstream scoring job written the way many teams would in Python.

confluent-kafka (librdkafka) for the consumer group and the producer, fastavro
for Avro, numpy for the model: the same job as `riskstream run`, for the CPU
comparison of scripts/bench_python.sh (issue 6).

What it does, as the Rust worker does:
  * reads the whole labels topic (every partition, from the beginning) before
    scoring, then folds in labels that arrive later between batches (waiting,
    bounded, for the label stream to reach a batch's event time);
  * consumes the input topic in a consumer group in batches
    (`consume(num_messages=...)`), decodes Avro single-object encoding,
    validates, computes the model's inputs with the same feature engine
    (worker/src/features/mod.rs), standardises, runs the MLP in float32 with
    numpy, encodes the scored record (single-object encoding, key =
    customer_id) and produces it;
  * stores an input offset only once the output of that record and of every
    record before it is delivered (auto-commit of stored offsets, plus a
    synchronous commit at the end and on revoke): at least once;
  * on assignment of a partition with a committed offset, rewinds it to the
    beginning and replays the records before the committed offset into
    customer state without output (state rebuild, as the Rust worker does);
  * undecodable or invalid records go to the dead-letter topic with the
    Rust worker's headers (or are logged and skipped without --dlq-topic);
  * SIGTERM / SIGINT: stops consuming, delivers what it scored, commits.

Model: the JSON of `riskstream models export NAME@ALIAS --out FILE`.

Prints `records_per_second=...` at the end (handled records over the time
from the first consumed input record to the final commit) and
`first_output_seconds=...` (process start to the first output the broker
acknowledged, as riskstream and the Kafka Streams peer measure it; -1 when
there was none).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import signal
import sys
import time
from bisect import bisect_right
from collections import deque
from pathlib import Path


def _process_start() -> float:
    """time.monotonic() at this process's start (Linux: /proc; else now)."""
    now = time.monotonic()
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
        return now - max(age, 0.0)
    except (OSError, ValueError, IndexError):
        return now


PROCESS_START = _process_start()

# One BLAS thread: a 512 x 18 @ 18 x 128 product gains nothing from more, and
# OpenBLAS's extra threads spin (CPU time) while they wait for work, the more
# so when the cores are shared. Scale out with processes (partitions) instead.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402  (after the BLAS thread settings)
from confluent_kafka import (  # noqa: E402
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from fastavro import parse_schema, schemaless_reader, schemaless_writer  # noqa: E402

DAY_MS = 86_400_000
DELAY_MS = 7 * DAY_MS
CUSTOMER_HORIZON_MS = 30 * DAY_MS
TERMINAL_HORIZON_MS = (7 + 30) * DAY_MS
HIGH_AMOUNT_RATIO = 3.0
SWEEP_EVERY = 100_000

# The Rust engine's features, in its order (worker/src/features/mod.rs).
FEATURE_NAMES = [
    "TX_AMOUNT",
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    "CUSTOMER_ID_NB_TX_1DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_7DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_30DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW",
    "TERMINAL_ID_NB_TX_1DAY_WINDOW",
    "TERMINAL_ID_RISK_1DAY_WINDOW",
    "TERMINAL_ID_NB_TX_7DAY_WINDOW",
    "TERMINAL_ID_RISK_7DAY_WINDOW",
    "TERMINAL_ID_NB_TX_30DAY_WINDOW",
    "TERMINAL_ID_RISK_30DAY_WINDOW",
    "CUSTOMER_ID_AMOUNT_RATIO_30DAY",
    "CUSTOMER_ID_AMOUNT_ZSCORE_30DAY",
    "CUSTOMER_ID_AMOUNT_RATIO_MAX_30DAY",
    "CUSTOMER_ID_NB_HIGH_AMOUNT_14DAY",
]

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"
MAGIC = b"\xc3\x01"
HEADER_LEN = 10


def log(msg: str) -> None:
    print(f"python-worker: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Avro: schemas, fingerprints, single-object encoding
# --------------------------------------------------------------------------

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def canonical_form(schema, rust_compat: bool, namespace: str | None = None, seen=None) -> str:
    """Avro Parsing Canonical Form.

    With `rust_compat`, as apache-avro 0.21 (the Rust worker) writes it: a
    primitive with a logical type, `{"type": "long", "logicalType": ...}`,
    stays `{"type":"long"}` instead of becoming `"long"` as the
    specification's [PRIMITIVES] rule says, so its fingerprints differ from
    the specification's (and fastavro's) for every schema with a logical
    type. Records are written with the Rust fingerprint and read with either.
    """
    if seen is None:
        seen = set()
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return json.dumps(schema)
        full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
        return json.dumps(full)
    if isinstance(schema, list):
        return "[" + ",".join(canonical_form(s, rust_compat, namespace, seen) for s in schema) + "]"
    t = schema["type"]
    if t in _PRIMITIVES:
        if rust_compat and len(schema) > 1:
            return '{"type":' + json.dumps(t) + "}"
        return json.dumps(t)
    if isinstance(t, (dict, list)):
        return canonical_form(t, rust_compat, namespace, seen)
    if t in ("record", "error", "enum", "fixed"):
        name = schema["name"]
        ns = schema.get("namespace", namespace)
        full = name if "." in name or not ns else f"{ns}.{name}"
        if full in seen:
            return json.dumps(full)
        seen.add(full)
        inner_ns = full.rsplit(".", 1)[0] if "." in full else None
        parts = ['"name":' + json.dumps(full), '"type":' + json.dumps(t)]
        if t in ("record", "error"):
            fields = ",".join(
                '{"name":' + json.dumps(f["name"]) + ',"type":'
                + canonical_form(f["type"], rust_compat, inner_ns, seen) + "}"
                for f in schema["fields"]
            )
            parts.append('"fields":[' + fields + "]")
        elif t == "enum":
            parts.append('"symbols":' + json.dumps(schema["symbols"], separators=(",", ":")))
        else:
            parts.append('"size":' + str(int(schema["size"])))
        return "{" + ",".join(parts) + "}"
    if t == "array":
        return '{"type":"array","items":' + canonical_form(schema["items"], rust_compat, namespace, seen) + "}"
    if t == "map":
        return '{"type":"map","values":' + canonical_form(schema["values"], rust_compat, namespace, seen) + "}"
    raise ValueError(f"unsupported schema type {t!r}")


_EMPTY = 0xC15D213AA4D7A795
_RABIN_TABLE = []
for _i in range(256):
    _fp = _i
    for _ in range(8):
        _fp = (_fp >> 1) ^ (_EMPTY & -(_fp & 1))
    _RABIN_TABLE.append(_fp)


def rabin(data: bytes) -> bytes:
    """CRC-64-AVRO of `data`, as the 8 little-endian bytes of single-object encoding."""
    fp = _EMPTY
    for b in data:
        fp = (fp >> 8) ^ _RABIN_TABLE[(fp ^ b) & 0xFF]
    return fp.to_bytes(8, "little")


def _plain(schema):
    """The schema without logical types: timestamps stay epoch-ms ints (no datetime round trip)."""
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_plain(s) for s in schema]
    return schema


class AvroType:
    """One record type: the schema fastavro uses and its single-object headers."""

    def __init__(self, path: Path):
        raw = json.loads(path.read_text())
        self.name = raw.get("namespace", "") + "." + raw["name"]
        self.schema = parse_schema(_plain(raw))
        self.fp_rust = rabin(canonical_form(raw, rust_compat=True).encode())
        self.fp_spec = rabin(canonical_form(raw, rust_compat=False).encode())
        self.header = MAGIC + self.fp_rust


class DecodeError(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Codec:
    def __init__(self, schema_dir: Path):
        self.transaction = AvroType(schema_dir / "transaction.avsc")
        self.label = AvroType(schema_dir / "fraud_label.avsc")
        self.scored = AvroType(schema_dir / "scored_transaction.avsc")
        # Writer schemas we read, by fingerprint: (writer, reader or None).
        self.tx_writers = {}
        for t in [self.transaction] + [AvroType(p) for p in sorted((schema_dir / "history").glob("transaction*.avsc"))]:
            reader = None if t is self.transaction else self.transaction.schema
            for fp in (t.fp_rust, t.fp_spec):
                self.tx_writers[fp] = (t.schema, reader)
        self.label_writers = {fp: self.label.schema for fp in (self.label.fp_rust, self.label.fp_spec)}

    @staticmethod
    def _frame(payload, writers):
        if not payload:
            raise DecodeError("empty_payload", "record has no payload")
        if len(payload) < HEADER_LEN:
            raise DecodeError("not_single_object", f"{len(payload)} bytes, shorter than the 10-byte header")
        if payload[:2] != MAGIC:
            raise DecodeError("not_single_object", f"starts with {payload[:2].hex(' ')}, expected c3 01")
        w = writers.get(payload[2:HEADER_LEN])
        if w is None:
            raise DecodeError("unknown_fingerprint", f"unknown writer schema fingerprint {payload[2:HEADER_LEN][::-1].hex()}")
        return w

    def decode_transaction(self, key, payload) -> dict:
        writer, reader = self._frame(payload, self.tx_writers)
        bio = io.BytesIO(payload)
        bio.seek(HEADER_LEN)
        try:
            tx = schemaless_reader(bio, writer, reader)
        except Exception as e:  # noqa: BLE001 - any malformed datum
            raise DecodeError("malformed_avro", f"malformed Avro datum: {e}") from e
        if bio.tell() != len(payload):
            raise DecodeError("malformed_avro", f"{len(payload) - bio.tell()} trailing bytes after the datum")
        if not key:
            raise DecodeError("missing_key", "record has no key (expected the customer id)")
        if key != tx["customer_id"].encode():
            raise DecodeError("invalid_field", f"record key {key!r} differs from customer_id {tx['customer_id']!r}")
        if not tx["transaction_id"] or not tx["customer_id"] or not tx["terminal_id"]:
            raise DecodeError("invalid_field", "empty id")
        a = tx["amount"]
        if not math.isfinite(a) or a < 0.0:
            raise DecodeError("invalid_field", f"amount {a} is negative or not finite")
        if tx["event_time"] <= 0:
            raise DecodeError("invalid_field", f"event_time {tx['event_time']} is not a valid epoch-ms time")
        return tx

    def decode_label(self, payload) -> dict:
        writer = self._frame(payload, self.label_writers)
        bio = io.BytesIO(payload)
        bio.seek(HEADER_LEN)
        return schemaless_reader(bio, writer, None)

    def encode_scored(self, record: dict) -> bytes:
        bio = io.BytesIO()
        bio.write(self.scored.header)
        schemaless_writer(bio, self.scored.schema, record)
        return bio.getvalue()


# --------------------------------------------------------------------------
# Features: a port of worker/src/features/mod.rs
# --------------------------------------------------------------------------


class FeatureEngine:
    """Per-customer windows from the transaction stream, per-terminal counts
    and fraud rates over (t - 7 - n days, t - 7 days] from the label stream.

    Histories are kept sorted by event time as parallel lists, so every
    window is a slice found by bisection (the Rust engine scans; the sums run
    over the same elements in the same chronological order: `sum()` adds
    floats left to right up to Python 3.11; 3.12 compensates, which can move
    a mean by an ulp).

    Eviction is the Rust engine's, sweep included: every 100 000
    transactions, customer entries older than 30 days and labels older than
    37 days before the newest event time seen on any partition are dropped.
    When partitions are consumed unevenly (a backlog), that clock runs ahead
    of the lagging partitions and their features lose history, in both
    workers alike; which records are hit depends on the consumption order.
    """

    def __init__(self, need_high: bool):
        # customer -> [times, amounts, squares, ids, high flags]
        self.customers: dict[str, list] = {}
        # terminal -> [times, fraud (0/1), ids]
        self.terminals: dict[str, list] = {}
        self.newest = 0
        self.since_sweep = 0
        self.need_high = need_high

    def observe_transaction(self, txid: str, t: int, customer: str, terminal: str, amount: float) -> list:
        if t > self.newest:
            self.newest = t
        self.since_sweep += 1
        if self.since_sweep >= SWEEP_EVERY:
            self.sweep()
        c = self.customers.get(customer)
        if c is None:
            c = self.customers[customer] = [[], [], [], [], []]
        times, amounts, squares, ids, high = c
        # Drop what no window can reach any more.
        cut = bisect_right(times, t - CUSTOMER_HORIZON_MS)
        if cut:
            del times[:cut], amounts[:cut], squares[:cut], ids[:cut], high[:cut]
        # Where this transaction is: where it already is (redelivery, state
        # rebuild: same id, so same event time), else after every
        # transaction not later than it.
        pos = bisect_right(times, t)
        lo = pos - 1
        while lo >= 0 and times[lo] == t and ids[lo] != txid:
            lo -= 1
        if lo >= 0 and times[lo] == t:
            pos = lo
        else:
            if pos == len(times):
                times.append(t)
                amounts.append(amount)
                squares.append(amount * amount)
                ids.append(txid)
                high.append(False)
            else:
                times.insert(pos, t)
                amounts.insert(pos, amount)
                squares.insert(pos, amount * amount)
                ids.insert(pos, txid)
                high.insert(pos, False)
        end = pos + 1
        s1 = bisect_right(times, t - DAY_MS, 0, end)
        s7 = bisect_right(times, t - 7 * DAY_MS, 0, end)
        s30 = bisect_right(times, t - 30 * DAY_MS, 0, end)
        n1, n7, n30 = end - s1, end - s7, end - s30
        # Earlier transactions of the last 30 days, current excluded.
        n = pos - s30
        if n > 0:
            total = sum(amounts[s30:pos])
            mean = total / n
            ratio = amount / mean if mean > 0.0 else 1.0
            var = sum(squares[s30:pos]) / n - mean * mean
            if var < 0.0:
                var = 0.0
            if n >= 2 and var > 1e-12:
                z = (amount - mean) / math.sqrt(var)
                z = -50.0 if z < -50.0 else (50.0 if z > 50.0 else z)
            else:
                z = 0.0
            mx = max(amounts[s30:pos])
            ratio_max = amount / mx if mx > 0.0 else 1.0
        else:
            ratio, z, ratio_max = 1.0, 0.0, 1.0
        day = t // DAY_MS
        f = [
            amount,
            1.0 if (day + 3) % 7 >= 5 else 0.0,
            1.0 if (t % DAY_MS) // 3_600_000 <= 6 else 0.0,
            float(n1),
            sum(amounts[s1:end]) / n1,
            float(n7),
            sum(amounts[s7:end]) / n7,
            float(n30),
            sum(amounts[s30:end]) / n30,
        ]
        # Terminal features from the labels.
        term = self.terminals.get(terminal)
        if term is None:
            f += (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        else:
            ttimes, tfraud = term[0], term[1]
            tend = t - DELAY_MS
            e = bisect_right(ttimes, tend)
            for days in (1, 7, 30):
                s = bisect_right(ttimes, tend - days * DAY_MS, 0, e)
                k = e - s
                f.append(float(k))
                f.append(sum(tfraud[s:e]) / k if k else 0.0)
        f.append(ratio)
        f.append(z)
        f.append(ratio_max)
        if self.need_high:
            high[pos] = ratio > HIGH_AMOUNT_RATIO
            s14 = bisect_right(times, t - 14 * DAY_MS, 0, end)
            f.append(float(sum(high[s14:end])))
        return f

    def observe_label(self, txid: str, terminal: str, t: int, fraud: bool) -> None:
        if t <= self.newest - TERMINAL_HORIZON_MS:
            return
        term = self.terminals.get(terminal)
        if term is None:
            term = self.terminals[terminal] = [[], [], []]
        times, frauds, ids = term
        p = bisect_right(times, t)
        i = p - 1
        while i >= 0 and times[i] == t:  # already there (same id, same event time)
            if ids[i] == txid:
                return
            i -= 1
        times.insert(p, t)
        frauds.insert(p, 1 if fraud else 0)
        ids.insert(p, txid)

    def sweep(self) -> None:
        self.since_sweep = 0
        c_cut = self.newest - CUSTOMER_HORIZON_MS
        for k in list(self.customers):
            lists = self.customers[k]
            cut = bisect_right(lists[0], c_cut)
            if cut:
                for lst in lists:
                    del lst[:cut]
                if not lists[0]:
                    del self.customers[k]
        t_cut = self.newest - TERMINAL_HORIZON_MS
        for k in list(self.terminals):
            lists = self.terminals[k]
            cut = bisect_right(lists[0], t_cut)
            if cut:
                for lst in lists:
                    del lst[:cut]
                if not lists[0]:
                    del self.terminals[k]

    def label_count(self) -> int:
        return sum(len(v[0]) for v in self.terminals.values())


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------


class Model:
    """standardise (float64, then float32) -> Linear/ReLU ... -> Linear -> sigmoid, in float32."""

    def __init__(self, path: str):
        m = json.loads(Path(path).read_text())
        self.name = m["name"]
        self.version = str(m["version"])
        self.inputs = m["inputs"]
        unknown = [i for i in self.inputs if i not in FEATURE_NAMES]
        if unknown:
            raise SystemExit(f"model inputs unknown to the feature engine: {unknown}")
        self.columns = np.array([FEATURE_NAMES.index(i) for i in self.inputs])
        self.identity = list(self.columns) == list(range(len(self.inputs)))
        self.mean = np.asarray(m["mean"], dtype=np.float64)
        self.std = np.asarray(m["std"], dtype=np.float64)
        self.threshold = np.float32(m["threshold"])
        self.layers = [
            (
                np.asarray(l["weight"], dtype=np.float32).reshape(l["d_in"], l["d_out"]),
                np.asarray(l["bias"], dtype=np.float32),
            )
            for l in m["layers"]
        ]

    def score(self, features: list) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        if not self.identity:
            x = x[:, self.columns]
        x = ((x - self.mean) / self.std).astype(np.float32)
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            x = x @ w
            x += b
            if i < last:
                np.maximum(x, 0.0, out=x)
        # Stable sigmoid, as burn's CPU backend computes it.
        z = x[:, 0]
        e = np.exp(-np.abs(z))
        return np.where(z >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))


# --------------------------------------------------------------------------
# Kafka plumbing
# --------------------------------------------------------------------------


class Batch:
    """Outputs of one consumed batch: its input offsets are stored once all are delivered."""

    __slots__ = ("pending", "offsets", "n", "producer")
    first_ack = None  # time.monotonic() of the first acknowledged output

    def __init__(self, producer, offsets: dict, n: int):
        self.producer = producer
        self.pending = n
        self.offsets = offsets  # input partition -> next offset
        self.n = n

    def ack(self, err, msg) -> None:
        if err is None:
            self.pending -= 1
            if Batch.first_ack is None:
                Batch.first_ack = time.monotonic()
            return
        if err.fatal() or (not err.retriable() and err.code() != KafkaError._MSG_TIMED_OUT):
            raise KafkaException(err)
        # librdkafka already retried: send it again (as the Rust sink does).
        self.producer.produce(msg.topic(), value=msg.value(), key=msg.key(), headers=msg.headers(), on_delivery=self.ack)


def ensure_topic(brokers: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": brokers})
    md = admin.list_topics(timeout=10)
    t = md.topics.get(topic)
    if t is not None and t.error is None and t.partitions:
        return
    fut = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)], operation_timeout=10)
    for f in fut.values():
        try:
            f.result()
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


class Worker:
    def __init__(self, args):
        self.args = args
        self.codec = Codec(Path(args.schemas))
        self.model = Model(args.model_json)
        self.engine = FeatureEngine(need_high="CUSTOMER_ID_NB_HIGH_AMOUNT_14DAY" in self.model.inputs)
        self.delivered = 0
        self.dead = 0
        self.replay_until: dict[int, int] = {}
        self.pending: deque[Batch] = deque()
        base = {"bootstrap.servers": args.brokers}
        self.producer = Producer({
            **base,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "compression.type": "lz4",
            "message.timeout.ms": 30000,
        })
        self.consumer = Consumer({
            **base,
            "group.id": args.group,
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
            "auto.commit.interval.ms": 500,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range",
        })
        self.labels = Consumer({
            **base,
            "group.id": f"{args.group}.labels",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        })
        self.label_at_end: dict[int, bool] = {}
        self.label_newest: dict[int, int] = {}

    # -- labels ----------------------------------------------------------

    def _apply_labels(self, msgs) -> None:
        decode = self.codec.decode_label
        observe = self.engine.observe_label
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self.label_at_end[m.partition()] = True
                else:
                    log(f"labels consumer error: {err}")
                continue
            self.label_at_end[m.partition()] = False
            try:
                l = decode(m.value())
            except Exception as e:  # noqa: BLE001 - labels are feedback: skip
                log(f"undecodable label skipped (partition {m.partition()} offset {m.offset()}): {e}")
                continue
            self.label_newest[m.partition()] = l["reported_at"]
            observe(l["transaction_id"], l["terminal_id"], l["event_time"], l["is_fraud"])

    def load_labels(self) -> None:
        t0 = time.monotonic()
        topic = self.args.labels_topic
        md = self.labels.list_topics(topic, timeout=10).topics.get(topic)
        parts = sorted(md.partitions) if md is not None and md.error is None else []
        if not parts:
            log(f"labels topic {topic} not found: terminal features stay 0")
            self.label_at_end = {}
            return
        self.labels.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.label_at_end = {p: False for p in parts}
        while not all(self.label_at_end.values()):
            self._apply_labels(self.labels.consume(num_messages=10_000, timeout=0.1))
        log(f"label history loaded: {self.engine.label_count()} labels in {time.monotonic() - t0:.2f} s")

    def catch_up_labels(self, newest_event: int) -> None:
        """Labels that arrived meanwhile; waits (bounded) for the label stream to reach the batch."""
        if not self.label_at_end:
            return
        self._apply_labels(self.labels.consume(num_messages=10_000, timeout=0))
        deadline = time.monotonic() + self.args.labels_wait_ms / 1000
        while not all(self.label_at_end.values()):
            wm = min(self.label_newest.get(p, -(2**63)) for p, e in self.label_at_end.items() if not e)
            if wm >= newest_event or time.monotonic() >= deadline:
                break
            self._apply_labels(self.labels.consume(num_messages=10_000, timeout=0.002))

    # -- consumer group --------------------------------------------------

    def on_assign(self, consumer, partitions) -> None:
        # Partitions with a committed offset restart from the beginning: the
        # records before it rebuild customer state without output.
        committed = consumer.committed(partitions, timeout=10)
        for p, c in zip(partitions, committed):
            if c.offset > 0:
                self.replay_until[p.partition] = c.offset
                p.offset = OFFSET_BEGINNING
        if self.replay_until:
            log(f"rebuilding customer state before scoring: {self.replay_until}")
        consumer.assign(partitions)

    def on_revoke(self, consumer, partitions) -> None:
        for p in partitions:
            self.replay_until.pop(p.partition, None)
        self.producer.flush(30)
        self.store_delivered()
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as e:
            if e.args[0].code() != KafkaError._NO_OFFSET:
                log(f"commit on revoke failed: {e}")

    def store_delivered(self) -> None:
        topic = self.args.input_topic
        done = []
        while self.pending and self.pending[0].pending == 0:
            b = self.pending.popleft()
            self.delivered += b.n
            done.extend(TopicPartition(topic, p, o) for p, o in b.offsets.items())
        if done:
            self.consumer.store_offsets(offsets=done)

    def produce(self, topic, value, key, on_delivery, headers=None) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
                return
            except BufferError:
                self.producer.poll(0.005)

    # -- main loop -------------------------------------------------------

    def run(self) -> int:
        a = self.args
        ensure_topic(a.brokers, a.output_topic, a.partitions)
        if a.dlq_topic:
            ensure_topic(a.brokers, a.dlq_topic, a.partitions)
        self.load_labels()
        self.consumer.subscribe([a.input_topic], on_assign=self.on_assign, on_revoke=self.on_revoke)
        codec, engine, model = self.codec, self.engine, self.model
        observe = engine.observe_transaction
        encode = codec.encode_scored
        out_topic = a.output_topic
        model_name, model_version = model.name, model.version
        threshold = float(model.threshold)
        limit = a.max_records
        scored_total = 0
        first = None
        linger = a.linger_ms / 1000
        stop = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.append(True))
        while (limit is None or scored_total < limit) and not stop:
            msgs = self.consumer.consume(num_messages=a.batch, timeout=linger if first else 1.0)
            self.producer.poll(0)
            self.store_delivered()
            if not msgs:
                continue
            if first is None:
                first = time.monotonic()
            txs, keys, offsets, dead = [], [], {}, []
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.fatal():
                        raise KafkaException(err)
                    if err.code() != KafkaError._PARTITION_EOF:
                        log(f"consumer error: {err}")
                    continue
                p = m.partition()
                until = self.replay_until.get(p)
                if until is not None:
                    if m.offset() < until:
                        try:
                            tx = codec.decode_transaction(m.key(), m.value())
                            observe(tx["transaction_id"], tx["event_time"], tx["customer_id"], tx["terminal_id"], tx["amount"])
                        except DecodeError:
                            pass
                        continue
                    del self.replay_until[p]
                    log(f"partition {p}: customer state rebuilt; scoring resumes at {until}")
                if limit is not None and scored_total + len(txs) + len(dead) >= limit:
                    break
                offsets[p] = m.offset() + 1
                try:
                    txs.append(codec.decode_transaction(m.key(), m.value()))
                    keys.append(m.key())
                except DecodeError as e:
                    dead.append((m, e))
            n = len(txs) + len(dead)
            if n == 0:
                continue
            batch = Batch(self.producer, offsets, n)
            self.pending.append(batch)
            for m, e in dead:
                self.dead += 1
                if not a.dlq_topic:
                    log(f"record skipped (partition {m.partition()} offset {m.offset()}): {e.reason}: {e.detail}")
                    batch.pending -= 1
                    continue
                headers = [
                    ("riskstream.reason", e.reason),
                    ("riskstream.error", e.detail),
                    ("riskstream.source.topic", a.input_topic),
                    ("riskstream.source.partition", str(m.partition())),
                    ("riskstream.source.offset", str(m.offset())),
                ]
                self.produce(a.dlq_topic, m.value(), m.key(), batch.ack, headers=headers)
            if txs:
                self.catch_up_labels(max(tx["event_time"] for tx in txs))
                feats = [
                    observe(tx["transaction_id"], tx["event_time"], tx["customer_id"], tx["terminal_id"], tx["amount"])
                    for tx in txs
                ]
                scores = model.score(feats)
                flags = (scores >= model.threshold).tolist()
                scored_at = time.time_ns() // 1_000_000
                for tx, key, score, flag in zip(txs, keys, scores.tolist(), flags):
                    tx["score"] = score
                    tx["is_fraud"] = flag
                    tx["threshold"] = threshold
                    tx["model_name"] = model_name
                    tx["model_version"] = model_version
                    tx["scored_at"] = scored_at
                    self.produce(out_topic, encode(tx), key, batch.ack)
            scored_total += n
        # Stop: deliver everything, store and commit.
        left = self.producer.flush(60)
        self.store_delivered()
        if left or self.pending:
            log(f"{left} records not delivered; their offsets are not committed")
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as e:
            if e.args[0].code() != KafkaError._NO_OFFSET:
                log(f"final commit failed: {e}")
        elapsed = time.monotonic() - first if first else 0.0
        self.consumer.close()
        self.labels.close()
        rate = self.delivered / elapsed if elapsed > 0 else 0.0
        first_output = Batch.first_ack - PROCESS_START if Batch.first_ack is not None else -1.0
        print(
            f"handled={self.delivered} dead_letters={self.dead} active_seconds={elapsed:.3f} "
            f"records_per_second={rate:.1f} first_output_seconds={first_output:.3f}",
            flush=True,
        )
        return 0 if not left and not self.pending else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--brokers", default=os.environ.get("RISKSTREAM_BROKERS", "127.0.0.1:9092"))
    p.add_argument("--group", default="riskstream-python")
    p.add_argument("--input-topic", default="transactions")
    p.add_argument("--labels-topic", default="transactions.labels")
    p.add_argument("--output-topic", default="transactions.scored")
    p.add_argument("--dlq-topic", default="", help="dead-letter topic ('' = log and skip)")
    p.add_argument("--model-json", required=True, help="riskstream models export NAME@ALIAS --out FILE")
    p.add_argument("--schemas", default=str(SCHEMA_DIR))
    p.add_argument("--max-records", type=int, default=None, help="stop after N delivered, commit and exit")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--linger-ms", type=float, default=5.0, help="longest consume() waits for a batch to fill")
    p.add_argument("--labels-wait-ms", type=float, default=2000.0)
    p.add_argument("--partitions", type=int, default=4, help="partitions of topics created here")
    return Worker(p.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
