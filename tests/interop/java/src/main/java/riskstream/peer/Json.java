package riskstream.peer;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericFixed;
import org.apache.avro.generic.GenericRecord;

/**
 * Plain JSON (field name to value, as serde_json writes a struct) to Avro
 * generic data and back. Strict: a value of the wrong type is an error, a
 * missing field takes its schema default or is an error.
 */
final class Json {
    static final ObjectMapper MAPPER = new ObjectMapper();
    static final JsonNodeFactory NODES = JsonNodeFactory.instance;

    private Json() {}

    static GenericRecord toRecord(Schema schema, JsonNode node) {
        return (GenericRecord) toAvro(schema, node, schema.getFullName());
    }

    private static Object toAvro(Schema s, JsonNode n, String where) {
        switch (s.getType()) {
            case NULL:
                return expect(n.isNull(), () -> null, s, where);
            case BOOLEAN:
                return expect(n.isBoolean(), () -> n.booleanValue(), s, where);
            case INT:
                return expect(n.canConvertToInt() && n.isIntegralNumber(), () -> n.intValue(), s, where);
            case LONG:
                return expect(n.canConvertToLong() && n.isIntegralNumber(), () -> n.longValue(), s, where);
            case FLOAT:
                return expect(n.isNumber(), () -> n.floatValue(), s, where);
            case DOUBLE:
                return expect(n.isNumber(), () -> n.doubleValue(), s, where);
            case STRING:
                return expect(n.isTextual(), () -> n.textValue(), s, where);
            case BYTES:
                return expect(n.isTextual(), () -> ByteBuffer.wrap(base64(n)), s, where);
            case FIXED:
                return expect(n.isTextual(), () -> new GenericData.Fixed(s, base64(n)), s, where);
            case ENUM:
                return expect(n.isTextual(), () -> new GenericData.EnumSymbol(s, n.textValue()), s, where);
            case ARRAY: {
                expect(n.isArray(), () -> null, s, where);
                List<Object> out = new ArrayList<>();
                n.forEach(e -> out.add(toAvro(s.getElementType(), e, where + "[]")));
                return out;
            }
            case MAP: {
                expect(n.isObject(), () -> null, s, where);
                Map<String, Object> out = new HashMap<>();
                n.properties().forEach(e ->
                        out.put(e.getKey(), toAvro(s.getValueType(), e.getValue(), where + "." + e.getKey())));
                return out;
            }
            case RECORD: {
                expect(n.isObject(), () -> null, s, where);
                GenericRecord r = new GenericData.Record(s);
                for (Schema.Field f : s.getFields()) {
                    JsonNode v = n.get(f.name());
                    if (v != null) {
                        r.put(f.pos(), toAvro(f.schema(), v, where + "." + f.name()));
                    } else if (f.hasDefaultValue()) {
                        r.put(f.pos(), GenericData.get().getDefaultValue(f));
                    } else {
                        throw new IllegalArgumentException(where + "." + f.name() + " is missing");
                    }
                }
                return r;
            }
            case UNION:
                // The first branch the value fits (plain JSON names no branch).
                for (Schema branch : s.getTypes()) {
                    try {
                        return toAvro(branch, n, where);
                    } catch (IllegalArgumentException notThisOne) {
                        // try the next branch
                    }
                }
                throw new IllegalArgumentException(where + ": " + n + " fits no branch of " + s);
            default:
                throw new IllegalArgumentException(where + ": unsupported type " + s.getType());
        }
    }

    /** The value, made only once the JSON node is known to fit {@code s}. */
    private static Object expect(boolean fits, Supplier<Object> value, Schema s, String where) {
        if (!fits) {
            throw new IllegalArgumentException(where + " is not a " + s.getType());
        }
        return value.get();
    }

    private static byte[] base64(JsonNode n) {
        return Base64.getDecoder().decode(n.textValue());
    }

    /** Avro generic data as JSON: records as objects, bytes and fixed as base64. */
    static JsonNode fromAvro(Object v) {
        if (v == null) {
            return NODES.nullNode();
        } else if (v instanceof GenericRecord r) {
            ObjectNode o = NODES.objectNode();
            for (Schema.Field f : r.getSchema().getFields()) {
                o.set(f.name(), fromAvro(r.get(f.pos())));
            }
            return o;
        } else if (v instanceof CharSequence || v instanceof GenericData.EnumSymbol) {
            return NODES.textNode(v.toString());
        } else if (v instanceof Boolean b) {
            return NODES.booleanNode(b);
        } else if (v instanceof Integer i) {
            return NODES.numberNode(i);
        } else if (v instanceof Long l) {
            return NODES.numberNode(l);
        } else if (v instanceof Float f) {
            return NODES.numberNode(f);
        } else if (v instanceof Double d) {
            return NODES.numberNode(d);
        } else if (v instanceof ByteBuffer b) {
            byte[] out = new byte[b.remaining()];
            b.duplicate().get(out);
            return NODES.textNode(Base64.getEncoder().encodeToString(out));
        } else if (v instanceof GenericFixed f) {
            return NODES.textNode(Base64.getEncoder().encodeToString(f.bytes()));
        } else if (v instanceof Collection<?> c) {
            ArrayNode a = NODES.arrayNode();
            c.forEach(e -> a.add(fromAvro(e)));
            return a;
        } else if (v instanceof Map<?, ?> m) {
            ObjectNode o = NODES.objectNode();
            m.forEach((k, e) -> o.set(k.toString(), fromAvro(e)));
            return o;
        }
        throw new IllegalArgumentException("unexpected Avro value " + v.getClass());
    }
}
