package riskstream.peer;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;

/**
 * One schema's records on the wire, as the reference implementation writes and
 * reads them: Avro single-object encoding through {@link BinaryMessageEncoder}
 * and {@link BinaryMessageDecoder} (which know the schema by its own CRC-64-AVRO
 * fingerprint of the Parsing Canonical Form), or the Confluent wire format.
 */
final class Framing {
    /** Magic byte of the Confluent wire format. */
    private static final byte CONFLUENT_MAGIC = 0;

    final Schema schema;
    private final Integer schemaId; // null: single-object encoding
    private final BinaryMessageEncoder<GenericRecord> encoder;
    private final BinaryMessageDecoder<GenericRecord> decoder;

    private Framing(Schema schema, Integer schemaId) {
        this.schema = schema;
        this.schemaId = schemaId;
        this.encoder = new BinaryMessageEncoder<>(GenericData.get(), schema);
        this.decoder = new BinaryMessageDecoder<>(GenericData.get(), schema);
    }

    /** The schema file --schema in the framing --framing (--schema-id for confluent). */
    static Framing of(Args args) throws IOException {
        Schema schema = new Schema.Parser().parse(new File(args.get("schema")));
        return switch (args.get("framing", "single-object")) {
            case "single-object" -> new Framing(schema, null);
            case "confluent" -> new Framing(schema, Integer.valueOf(args.get("schema-id")));
            default -> throw new IllegalArgumentException("--framing single-object|confluent");
        };
    }

    byte[] encode(GenericRecord record) throws IOException {
        if (schemaId == null) {
            ByteBuffer buf = encoder.encode(record);
            byte[] out = new byte[buf.remaining()];
            buf.get(out);
            return out;
        }
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.write(CONFLUENT_MAGIC);
        out.write(ByteBuffer.allocate(4).putInt(schemaId).array());
        BinaryEncoder enc = EncoderFactory.get().binaryEncoder(out, null);
        new GenericDatumWriter<GenericRecord>(schema).write(record, enc);
        enc.flush();
        return out.toByteArray();
    }

    /**
     * Decodes a whole record; throws if its header is not this schema's or any
     * byte is left after the datum.
     */
    GenericRecord decode(byte[] payload) throws IOException {
        if (payload == null) {
            throw new IOException("no payload");
        }
        if (schemaId == null) {
            // A direct (unbuffered) decoder reads the stream: what is left is trailing.
            ByteArrayInputStream in = new ByteArrayInputStream(payload);
            GenericRecord r = decoder.decode(in);
            if (in.available() > 0) {
                throw new IOException(in.available() + " bytes after the datum");
            }
            return r;
        }
        ByteBuffer buf = ByteBuffer.wrap(payload);
        if (payload.length < 5 || buf.get() != CONFLUENT_MAGIC || buf.getInt() != schemaId) {
            throw new IOException("not Confluent-framed with schema id " + schemaId);
        }
        BinaryDecoder dec = DecoderFactory.get().binaryDecoder(payload, 5, payload.length - 5, null);
        GenericRecord r = new GenericDatumReader<GenericRecord>(schema).read(null, dec);
        if (!dec.isEnd()) {
            throw new IOException("bytes left after the datum");
        }
        return r;
    }
}
