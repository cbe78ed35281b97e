#!/usr/bin/env python3
"""End-to-end latency of any scorer, measured from the outside, matched by transaction_id.

    e2e_probe.py BROKERS INPUT_TOPIC OUTPUT_TOPIC EXPECTED [--ready FILE]
                 [--wait-output-s 300] [--idle-s 20] [--timeout-s 900]

For scripts/bench_peers.sh (issue 26): every system (riskstream, the Kafka
Streams and Python peers, passthrough) stamps its outputs' Kafka timestamps
its own way (riskstream uses the event time), so this probe does not use
them. It

  1. waits (--wait-output-s) until OUTPUT_TOPIC exists and holds at least one
     record: the system under test has started and handled the record the
     input topic was pre-loaded with;
  2. assigns every partition of both topics at its current end (the high
     watermark, read explicitly, so nothing produced afterwards is missed),
     then creates --ready FILE: the feed may start;
  3. consumes both in batches (`consume(num_messages=...)`, fetch.wait.max.ms
     5, so the probe itself adds little): an input record maps its
     transaction_id to its Kafka timestamp (the feed is produced with
     `riskstream replay --timestamp-now`: send time); an output record notes
     the wall-clock time its batch was received (the first time its id is
     seen);
  4. stops when EXPECTED outputs are matched, when nothing arrived for
     --idle-s after the feed began, or at --timeout-s; prints one JSON
     object: p50/p99/p99.9/max milliseconds of (received - input timestamp)
     over the ids seen on both sides, their count, inputs and outputs seen,
     and the feed's achieved rate (inputs over their timestamps' span).

Only the transaction_id is parsed: it is the first field of both
schemas/transaction.avsc and schemas/scored_transaction.avsc, so a record is
its 10-byte single-object header, a zig-zag varint length and that many
UTF-8 bytes (passthrough's outputs are its inputs, which parse the same).
Exit status 1 when no latency could be measured.

Needs confluent-kafka (the venv of scripts/python_worker_venv.sh).
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition

HEADER_LEN = 10


def transaction_id(v):
    """The first Avro string after the single-object header (bytes), or None."""
    if v is None or len(v) <= HEADER_LEN:
        return None
    i, shift, n = HEADER_LEN, 0, 0
    while True:
        b = v[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            break
    n = (n >> 1) ^ -(n & 1)
    return bytes(v[i:i + n]) if n >= 0 else None


def quantile(sorted_xs, q):
    """Nearest rank."""
    if not sorted_xs:
        return None
    k = max(0, min(len(sorted_xs) - 1, math.ceil(q * len(sorted_xs)) - 1))
    return sorted_xs[k]


def high(c, topic, partition, tries=50):
    """The partition's high watermark; retries while a new topic's leader is not known yet."""
    for i in range(tries):
        try:
            return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        except KafkaException:
            if i + 1 == tries:
                raise
            time.sleep(0.2)
    return 0


def partitions(c, topic):
    md = c.list_topics(topic, timeout=10).topics.get(topic)
    if md is None or md.error is not None or not md.partitions:
        return []
    return sorted(md.partitions)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("brokers")
    p.add_argument("input_topic")
    p.add_argument("output_topic")
    p.add_argument("expected", type=int)
    p.add_argument("--ready", help="file created once the probe is positioned: start the feed then")
    p.add_argument("--wait-output-s", type=float, default=300.0,
                   help="longest wait for the output topic's first record (the system's start)")
    p.add_argument("--idle-s", type=float, default=20.0, help="stop after this long with no record once the feed began")
    p.add_argument("--timeout-s", type=float, default=900.0, help="stop after this long in all")
    a = p.parse_args()
    started = time.monotonic()
    c = Consumer({"bootstrap.servers": a.brokers, "group.id": "riskstream-e2e-probe",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 5,
                  "isolation.level": "read_uncommitted"})

    # 1. The system is up when its output topic holds a record.
    deadline = started + a.wait_output_s
    while True:
        out_parts = partitions(c, a.output_topic)
        if out_parts and sum(high(c, a.output_topic, q) for q in out_parts) > 0:
            break
        if time.monotonic() > deadline:
            c.close()
            print(json.dumps({"error": f"no record on {a.output_topic} after {a.wait_output_s:.0f} s"}))
            return 1
        time.sleep(0.2)
    in_parts = partitions(c, a.input_topic)
    if not in_parts:
        c.close()
        print(json.dumps({"error": f"topic {a.input_topic} not found"}))
        return 1

    # 2. Every partition of both topics at its end, read explicitly.
    assignment = []
    for topic, parts in ((a.input_topic, in_parts), (a.output_topic, out_parts)):
        for q in parts:
            assignment.append(TopicPartition(topic, q, high(c, topic, q)))
    c.assign(assignment)
    if a.ready:
        Path(a.ready).write_text("ready\n")

    # 3. Inputs: id -> Kafka timestamp; outputs: id -> wall-clock ms received.
    sent, received = {}, {}
    in_topic = a.input_topic
    last_msg = None
    deadline = started + a.timeout_s
    matched = 0
    while True:
        msgs = c.consume(num_messages=10000, timeout=0.05)
        now_ms = time.time() * 1000.0
        if msgs:
            last_msg = time.monotonic()
            for m in msgs:
                if m.error() is not None:
                    continue
                tid = transaction_id(m.value())
                if tid is None:
                    continue
                if m.topic() == in_topic:
                    sent[tid] = m.timestamp()[1]
                elif tid not in received:
                    received[tid] = now_ms
            if len(received) >= a.expected and len(sent) >= a.expected:
                matched = sum(1 for k in received if k in sent)
                if matched >= a.expected:
                    break
        t = time.monotonic()
        if t > deadline or (last_msg is not None and t - last_msg > a.idle_s):
            break
    c.close()

    # 4. Latencies of the ids seen on both sides.
    lat = sorted(received[k] - sent[k] for k in received if k in sent)
    res = {"count": len(lat), "expected": a.expected, "inputs": len(sent), "outputs": len(received)}
    if sent:
        ts = list(sent.values())
        span = (max(ts) - min(ts)) / 1000.0
        res["input_rate"] = round((len(ts) - 1) / span, 1) if span > 0 else None
    for name, q in (("p50_ms", 0.5), ("p99_ms", 0.99), ("p999_ms", 0.999), ("max_ms", 1.0)):
        v = quantile(lat, q)
        res[name] = round(v, 1) if v is not None else None
    print(json.dumps(res), flush=True)
    return 0 if lat else 1


if __name__ == "__main__":
    sys.exit(main())
