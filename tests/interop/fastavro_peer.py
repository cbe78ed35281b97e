#!/usr/bin/env python3
"""The outside Avro implementation of tests/avro_interop.rs.

    fastavro_peer.py produce BROKERS TOPIC SCHEMA.avsc RECORDS.jsonl KEY_FIELD
        Encodes each JSON record with fastavro in Avro single-object encoding
        (C3 01, CRC-64-AVRO fingerprint of the Parsing Canonical Form as
        fastavro computes it, little-endian; fastavro's datum) and produces it
        with confluent-kafka, keyed by KEY_FIELD.
    fastavro_peer.py consume BROKERS TOPIC SCHEMA.avsc N
        Reads N records from the beginning of TOPIC and prints one JSON line
        per record: {"ok": true, "value": ...} when the header's fingerprint
        is fastavro's fingerprint of SCHEMA and the datum decodes with it,
        else {"ok": false, "why": ...}; headers are included as text.
"""
import io
import json
import sys
import time

import fastavro
import fastavro.schema as fs
from confluent_kafka import Consumer, Producer, TopicPartition


def epoch_ms(o):
    """timestamp-millis values come back as datetimes: epoch ms again."""
    if hasattr(o, "timestamp"):
        return round(o.timestamp() * 1000)
    raise TypeError(f"{type(o)} is not JSON")


def load(path):
    parsed = fs.parse_schema(json.load(open(path)))
    fp = bytes.fromhex(fs.fingerprint(fs.to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    return parsed, fp


def produce(brokers, topic, schema_path, records_path, key_field):
    parsed, fp = load(schema_path)
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    n = 0
    for line in open(records_path):
        rec = json.loads(line)
        buf = io.BytesIO()
        buf.write(b"\xc3\x01" + fp)
        fastavro.schemaless_writer(buf, parsed, rec)
        while True:
            try:
                p.produce(topic, key=str(rec[key_field]).encode(), value=buf.getvalue())
                break
            except BufferError:
                p.poll(0.05)
        n += 1
    left = p.flush(30)
    if left:
        sys.exit(f"{left} records not delivered")
    print(json.dumps({"produced": n}))


def consume(brokers, topic, schema_path, n):
    parsed, fp = load(schema_path)
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"peer-{time.time_ns()}",
                  "enable.auto.commit": False})
    md = c.list_topics(topic, timeout=10)
    parts = md.topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    got, idle = 0, time.time()
    while got < n and time.time() - idle < 30:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        idle = time.time()
        got += 1
        v = m.value() or b""
        headers = {k: (val or b"").decode("utf-8", "replace") for k, val in (m.headers() or [])}
        out = {"partition": m.partition(), "offset": m.offset(), "headers": headers}
        if v[:2] != b"\xc3\x01":
            out.update(ok=False, why=f"starts with {v[:2].hex()}")
        elif v[2:10] != fp:
            out.update(ok=False, why=f"fingerprint {v[2:10].hex()} is not fastavro's {fp.hex()}")
        else:
            try:
                out.update(ok=True, value=fastavro.schemaless_reader(io.BytesIO(v[10:]), parsed))
            except Exception as e:  # a decode failure is the test's finding
                out.update(ok=False, why=f"fastavro cannot decode: {e}")
        print(json.dumps(out, ensure_ascii=False, default=epoch_ms))
    c.close()


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "produce":
        produce(*args)
    elif cmd == "consume":
        consume(args[0], args[1], args[2], int(args[3]))
    else:
        sys.exit(__doc__)
