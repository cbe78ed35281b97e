#!/usr/bin/env python3
"""Parity of two scorers' output topics: both read whole, joined by transaction_id.

    parity.py BROKERS TOPIC_A TOPIC_B EXPECTED [--names A,B] [--tolerance 1e-5]
              [--allow-threshold-flips] [--schema schemas/scored_transaction.avsc]

Reads every partition of both topics from the beginning to its end (Avro
single-object encoding of ScoredTransaction; the 10-byte header is skipped,
so either fingerprint reads), keeps the last record per transaction_id, and
prints one JSON object on stdout: records per topic (keys named after
--names, default a,b), joined, max and mean |score difference|,
bit-identical scores, the share of flags that agree, flags per side, flags
that differ away from the threshold, records whose other fields differ, the
three worst differences, and "ok". One line for people on stderr.

Exit status 1 unless: both topics hold EXPECTED records and every one joins,
max |difference| <= --tolerance, every flag agrees (with
--allow-threshold-flips, a flag may differ where the score sits within 1e-5
of the threshold) and the other fields (event_time, ids, amount, currency,
threshold, model) are equal. scored_at is not compared.

Needs confluent-kafka and fastavro (the venv of scripts/bench_python.sh).
"""
import argparse
import io
import json
import sys
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from fastavro import parse_schema, schemaless_reader

FIELDS = ("event_time", "customer_id", "terminal_id", "amount", "currency", "threshold",
          "model_name", "model_version")


def plain(s):
    """The schema without logical types: timestamps stay epoch-ms ints."""
    if isinstance(s, dict):
        return {k: plain(v) for k, v in s.items() if k != "logicalType"}
    return [plain(x) for x in s] if isinstance(s, list) else s


def read_all(brokers, topic, schema):
    c = Consumer({"bootstrap.servers": brokers, "group.id": "riskstream-parity",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    md = c.list_topics(topic, timeout=10).topics.get(topic)
    if md is None or md.error is not None:
        c.close()
        raise SystemExit(f"parity: topic {topic} not found")
    parts = sorted(md.partitions)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    at_end, out = {p: False for p in parts}, {}
    while not all(at_end.values()):
        for m in c.consume(10000, 0.5):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    at_end[m.partition()] = True
                continue
            at_end[m.partition()] = False
            b = io.BytesIO(m.value())
            b.seek(10)
            r = schemaless_reader(b, schema, None)
            out[r["transaction_id"]] = r
    c.close()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("brokers")
    p.add_argument("topic_a")
    p.add_argument("topic_b")
    p.add_argument("expected", type=int)
    p.add_argument("--names", default="a,b", help="JSON keys for the two sides (e.g. rust,python)")
    p.add_argument("--tolerance", type=float, default=1e-5, help="largest |score difference| allowed")
    p.add_argument("--allow-threshold-flips", action="store_true",
                   help="a flag may differ where the score is within 1e-5 of the threshold")
    p.add_argument("--schema", default=str(Path(__file__).resolve().parent.parent
                                           / "schemas" / "scored_transaction.avsc"))
    a = p.parse_args()
    na, nb = a.names.split(",")
    schema = parse_schema(plain(json.load(open(a.schema))))
    ra, rb = read_all(a.brokers, a.topic_a, schema), read_all(a.brokers, a.topic_b, schema)
    common = [k for k in ra if k in rb]
    diff = {k: abs(ra[k]["score"] - rb[k]["score"]) for k in common}
    agree = sum(ra[k]["is_fraud"] == rb[k]["is_fraud"] for k in common)
    # Flags that differ although the score is not within float rounding of the threshold.
    unexplained = [k for k in common if ra[k]["is_fraud"] != rb[k]["is_fraud"]
                   and abs(ra[k]["score"] - ra[k]["threshold"]) > 1e-5]
    other = sum(any(ra[k][f] != rb[k][f] for f in FIELDS) for k in common)
    res = {
        na: len(ra), nb: len(rb), "joined": len(common),
        "max_abs_diff": max(diff.values(), default=0.0),
        "mean_abs_diff": sum(diff.values()) / max(len(diff), 1),
        "identical": sum(d == 0.0 for d in diff.values()),
        "agree": agree, "flags_agree": agree / max(len(common), 1),
        f"flagged_{na}": sum(ra[k]["is_fraud"] for k in common),
        f"flagged_{nb}": sum(rb[k]["is_fraud"] for k in common),
        "unexplained_flags": len(unexplained), "other_fields_differ": other,
        "worst": sorted(((d, k) for k, d in diff.items()), reverse=True)[:3],
    }
    flags_ok = not unexplained if a.allow_threshold_flips else agree == len(common)
    res["ok"] = (len(common) == a.expected and len(ra) == len(rb) == a.expected and flags_ok
                 and other == 0 and res["max_abs_diff"] <= a.tolerance)
    print(json.dumps(res), flush=True)
    print(f"parity: {na} {len(ra)}, {nb} {len(rb)}, joined {len(common)} (expected {a.expected}); "
          f"max |score diff| {res['max_abs_diff']:.3g}, {res['identical']} identical; "
          f"flags agree {agree}/{len(common)} ({res[f'flagged_{na}']} vs {res[f'flagged_{nb}']} flagged); "
          f"other fields differ {other}: {'ok' if res['ok'] else 'DIFFERENT'}", file=sys.stderr)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
