package riskstream.kstreams;

import java.util.HashMap;
import java.util.Map;
import java.util.Set;

/** The command line: {@code --name value} pairs, every one checked against the known flags. */
final class Options {
    static final String USAGE = """
            usage: java -jar riskstream-kstreams-peer.jar --model MODEL.json [flags]
              --brokers B             bootstrap servers (default $RISKSTREAM_BROKERS or 127.0.0.1:9092)
              --application-id ID     Kafka Streams application.id: consumer group, changelog and state names
                                      (default riskstream-kstreams)
              --input-topic T         transactions, key = customer_id (default transactions)
              --labels-topic T        delayed fraud labels, read whole into a global store (default transactions.labels)
              --output-topic T        scored transactions (default transactions.scored)
              --dlq-topic T           undecodable or invalid records with the reason in headers;
                                      "" counts and skips them (default transactions.dlq)
              --model FILE            `riskstream models export NAME@ALIAS --out FILE`
              --schemas DIR           the Avro schemas (default schemas, from the repository root)
              --max-records N         stop after N records handled (scored or dead-lettered), commit, print the summary
              --processing-guarantee at_least_once (default) | exactly_once_v2
              --threads N             num.stream.threads (default 1)
              --state-dir DIR         state.dir (default: a new temporary directory, removed at exit)
              --topic-partitions N    partitions of the output and dead-letter topics when created here (default 4)
              --rocksdb-cache-mb N    one block cache + write buffers shared by every RocksDB store (default 64)
            """;

    private static final Set<String> KNOWN = Set.of("brokers", "application-id", "input-topic", "labels-topic",
            "output-topic", "dlq-topic", "model", "schemas", "max-records", "processing-guarantee", "threads",
            "state-dir", "topic-partitions", "rocksdb-cache-mb");

    private final Map<String, String> values = new HashMap<>();

    Options(String[] argv) {
        for (int i = 0; i < argv.length; i++) {
            String a = argv[i];
            if (a.equals("--help") || a.equals("-h")) {
                throw new IllegalArgumentException("");
            }
            if (!a.startsWith("--") || i + 1 >= argv.length) {
                throw new IllegalArgumentException("expected --flag value, got " + a);
            }
            String name = a.substring(2);
            if (!KNOWN.contains(name)) {
                throw new IllegalArgumentException("unknown flag --" + name);
            }
            values.put(name, argv[++i]);
        }
    }

    String get(String name, String dflt) {
        return values.getOrDefault(name, dflt);
    }

    String required(String name) {
        String v = values.get(name);
        if (v == null || v.isEmpty()) {
            throw new IllegalArgumentException("--" + name + " is required");
        }
        return v;
    }

    long getLong(String name, long dflt) {
        String v = values.get(name);
        try {
            return v == null ? dflt : Long.parseLong(v);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("--" + name + ": not a number: " + v, e);
        }
    }
}
