package riskstream.kstreams;

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.apache.avro.AvroRuntimeException;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.message.BinaryMessageEncoder;

/**
 * riskstream's records on the wire: Avro single-object encoding (0xC3 0x01, the
 * writer schema's CRC-64-AVRO fingerprint little-endian, the binary datum).
 *
 * <p>Writes with {@link BinaryMessageEncoder} (the specification's fingerprint, as
 * riskstream writes since 0.2). Reads by fingerprint with Avro schema resolution
 * into the current schema, like riskstream: the current and historical
 * {@code Transaction} schemas (schemas/history), each under the specification's
 * fingerprint and under the one riskstream wrote before 0.2 (see
 * {@link #legacyForm}). The framing is read here rather than by
 * {@code BinaryMessageDecoder} so that a failure gets riskstream's reason code
 * (the dead-letter header {@code riskstream.reason}) and trailing bytes are
 * refused.
 *
 * <p>Not thread-safe (reused decoder): one per processor instance.
 */
final class WireCodec {
    static final int HEADER_LEN = 10;

    /** Why a record did not decode: riskstream's reason code and a detail. */
    static final class DecodeException extends Exception {
        private static final long serialVersionUID = 1L;
        final String reason;

        DecodeException(String reason, String detail) {
            super(detail);
            this.reason = reason;
        }
    }

    /** The fields of a transaction the job reads, validated. */
    record Transaction(String transactionId, long eventTime, String customerId, String terminalId,
                       double amount, String currency) {}

    /** The fields of a label the job reads. */
    record Label(String transactionId, String terminalId, long eventTime, boolean isFraud, long reportedAt) {}

    private final Map<Long, GenericDatumReader<GenericRecord>> txReaders = new HashMap<>();
    private final Map<Long, GenericDatumReader<GenericRecord>> labelReaders = new HashMap<>();
    final Schema scored;
    private final BinaryMessageEncoder<GenericRecord> scoredEncoder;
    private BinaryDecoder decoder;

    WireCodec(File schemaDir) throws IOException {
        Schema tx = parse(new File(schemaDir, "transaction.avsc"));
        List<Schema> writers = new ArrayList<>(List.of(tx));
        File[] history = new File(schemaDir, "history").listFiles(
                (d, n) -> n.startsWith("transaction") && n.endsWith(".avsc"));
        if (history != null) {
            for (File f : history) {
                writers.add(parse(f));
            }
        }
        for (Schema w : writers) {
            GenericDatumReader<GenericRecord> r = new GenericDatumReader<>(w, tx);
            txReaders.put(SchemaNormalization.parsingFingerprint64(w), r);
            txReaders.putIfAbsent(legacyFingerprint(w), r);
        }
        Schema label = parse(new File(schemaDir, "fraud_label.avsc"));
        GenericDatumReader<GenericRecord> lr = new GenericDatumReader<>(label, label);
        labelReaders.put(SchemaNormalization.parsingFingerprint64(label), lr);
        labelReaders.putIfAbsent(legacyFingerprint(label), lr);
        scored = parse(new File(schemaDir, "scored_transaction.avsc"));
        scoredEncoder = new BinaryMessageEncoder<>(GenericData.get(), scored);
    }

    private static Schema parse(File f) throws IOException {
        return new Schema.Parser().parse(f);
    }

    /** Decodes and validates a transaction as riskstream does (same reason codes). */
    Transaction decodeTransaction(byte[] key, byte[] payload) throws DecodeException {
        GenericRecord r = decode(payload, txReaders);
        if (key == null || key.length == 0) {
            throw new DecodeException("missing_key", "record has no key (expected the customer id)");
        }
        String customer = r.get("customer_id").toString();
        if (!customer.equals(new String(key, StandardCharsets.UTF_8))) {
            throw new DecodeException("invalid_field", "record key differs from customer_id " + customer);
        }
        String id = r.get("transaction_id").toString();
        String terminal = r.get("terminal_id").toString();
        if (id.isEmpty() || customer.isEmpty() || terminal.isEmpty()) {
            throw new DecodeException("invalid_field", "empty id");
        }
        double amount = (Double) r.get("amount");
        if (!Double.isFinite(amount) || amount < 0.0) {
            throw new DecodeException("invalid_field", "amount " + amount + " is negative or not finite");
        }
        long t = (Long) r.get("event_time");
        if (t <= 0) {
            throw new DecodeException("invalid_field", "event_time " + t + " is not a valid epoch-ms time");
        }
        return new Transaction(id, t, customer, terminal, amount, r.get("currency").toString());
    }

    Label decodeLabel(byte[] payload) throws DecodeException {
        GenericRecord r = decode(payload, labelReaders);
        return new Label(r.get("transaction_id").toString(), r.get("terminal_id").toString(),
                (Long) r.get("event_time"), (Boolean) r.get("is_fraud"), (Long) r.get("reported_at"));
    }

    byte[] encodeScored(GenericRecord record) {
        try {
            ByteBuffer b = scoredEncoder.encode(record);
            byte[] out = new byte[b.remaining()];
            b.get(out);
            return out;
        } catch (IOException e) {
            throw new IllegalStateException("cannot encode a scored record", e);
        }
    }

    private GenericRecord decode(byte[] payload, Map<Long, GenericDatumReader<GenericRecord>> readers)
            throws DecodeException {
        if (payload == null || payload.length == 0) {
            throw new DecodeException("empty_payload", "record has no payload");
        }
        if (payload.length < HEADER_LEN) {
            throw new DecodeException("not_single_object",
                    payload.length + " bytes, shorter than the 10-byte header");
        }
        if ((payload[0] & 0xff) != 0xC3 || payload[1] != 0x01) {
            throw new DecodeException("not_single_object", String.format(
                    "starts with %02x %02x, expected c3 01", payload[0] & 0xff, payload[1] & 0xff));
        }
        long fp = ByteBuffer.wrap(payload, 2, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        GenericDatumReader<GenericRecord> reader = readers.get(fp);
        if (reader == null) {
            throw new DecodeException("unknown_fingerprint",
                    String.format("unknown writer schema fingerprint %016x", fp));
        }
        decoder = DecoderFactory.get().binaryDecoder(payload, HEADER_LEN, payload.length - HEADER_LEN, decoder);
        try {
            GenericRecord r = reader.read(null, decoder);
            if (!decoder.isEnd()) {
                throw new DecodeException("malformed_avro", "trailing bytes after the datum");
            }
            return r;
        } catch (IOException | AvroRuntimeException | ClassCastException | IndexOutOfBoundsException
                 | NegativeArraySizeException e) {
            throw new DecodeException("malformed_avro", "malformed Avro datum: " + e);
        }
    }

    private static long legacyFingerprint(Schema s) {
        return SchemaNormalization.fingerprint64(legacyForm(s).getBytes(StandardCharsets.UTF_8));
    }

    /**
     * The Parsing Canonical Form as riskstream before 0.2 (apache-avro 0.21) wrote it:
     * a primitive with a logical type stays {@code {"type":"long"}} where the
     * specification says {@code "long"}. Enough for riskstream's flat records; any
     * other type falls back to the specification's form.
     */
    static String legacyForm(Schema s) {
        switch (s.getType()) {
            case RECORD: {
                StringBuilder b = new StringBuilder("{\"name\":\"").append(s.getFullName())
                        .append("\",\"type\":\"record\",\"fields\":[");
                boolean first = true;
                for (Schema.Field f : s.getFields()) {
                    b.append(first ? "" : ",").append("{\"name\":\"").append(f.name())
                            .append("\",\"type\":").append(legacyForm(f.schema())).append('}');
                    first = false;
                }
                return b.append("]}").toString();
            }
            case NULL: case BOOLEAN: case INT: case LONG: case FLOAT: case DOUBLE: case BYTES: case STRING:
                String name = "\"" + s.getType().getName() + "\"";
                return s.getLogicalType() != null ? "{\"type\":" + name + "}" : name;
            default:
                return SchemaNormalization.toParsingForm(s);
        }
    }
}
