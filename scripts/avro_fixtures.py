#!/usr/bin/env python3
"""Writes tests/fixtures/avro/fastavro.json: what fastavro (an Avro
implementation other than ours) says about riskstream's schemas.

For every schema under schemas/ (and schemas/history/): fastavro's Parsing
Canonical Form and CRC-64-AVRO fingerprint (hex of the 8 little-endian bytes,
as they stand in a single-object header); for the record types, a few sample
records and their single-object encoding written by fastavro (C3 01,
fingerprint, fastavro.schemaless_writer's datum). The Rust tests decode these
bytes and check that riskstream writes the same bytes for the same records.

    python3 -m pip install fastavro   # 1.13.1 made the committed file
    python3 scripts/avro_fixtures.py
"""
import io
import json
import pathlib

import fastavro
import fastavro.schema as fs

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLES = {
    "riskstream.Transaction": [
        {"transaction_id": "0", "event_time": 1522540800000, "customer_id": "596",
         "terminal_id": "3156", "amount": 57.16, "currency": "EUR"},
        {"transaction_id": "tx-é-✓", "event_time": 1530403199999, "customer_id": "c" * 200,
         "terminal_id": "t-9", "amount": 0.0, "currency": ""},
    ],
    "riskstream.FraudLabel": [
        {"transaction_id": "42", "customer_id": "7", "terminal_id": "1", "event_time": 1522540800123,
         "is_fraud": True, "reported_at": 1523145600123},
        {"transaction_id": "43", "customer_id": "8", "terminal_id": "2", "event_time": 1,
         "is_fraud": False, "reported_at": -1},
    ],
    "riskstream.ScoredTransaction": [
        {"transaction_id": "0", "event_time": 1522540800000, "customer_id": "596", "terminal_id": "3156",
         "amount": 57.16, "currency": "EUR", "score": 0.125, "is_fraud": False, "threshold": 0.5,
         "model_name": "fraud-mlp", "model_version": "2", "scored_at": 1764633600000},
    ],
}


def main():
    out = {"fastavro": fastavro.__version__, "schemas": []}
    files = sorted((ROOT / "schemas").glob("*.avsc")) + sorted((ROOT / "schemas" / "history").glob("*.avsc"))
    for path in files:
        text = path.read_text()
        parsed = fs.parse_schema(json.loads(text))
        pcf = fs.to_parsing_canonical_form(parsed)
        fp = fs.fingerprint(pcf, "CRC-64-AVRO")
        entry = {"file": str(path.relative_to(ROOT)), "canonical": pcf, "fingerprint": fp, "records": []}
        name = parsed.get("name") if isinstance(parsed, dict) else None
        if path.parent.name != "history":
            for rec in SAMPLES.get(name, []):
                buf = io.BytesIO()
                fastavro.schemaless_writer(buf, parsed, rec)
                entry["records"].append({"value": rec, "single_object": "c301" + fp + buf.getvalue().hex()})
        out["schemas"].append(entry)
    dest = ROOT / "tests" / "fixtures" / "avro" / "fastavro.json"
    dest.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {dest} ({len(out['schemas'])} schemas)")


if __name__ == "__main__":
    main()
