package riskstream.peer;

import java.util.Arrays;

/**
 * The JVM peer of tests/java_interop.rs: Avro's reference implementation and
 * Apache Kafka's Java client on riskstream's topics.
 *
 * <pre>
 * produce --brokers B --topic T --schema S.avsc --input RECORDS.jsonl
 *         --transactional-id ID [--batch 100] [--abort-every 0] [--key-field customer_id]
 *     One JSON record per line, encoded with the Avro schema S, produced in Kafka
 *     transactions of --batch records keyed by --key-field; every --abort-every-th
 *     transaction is aborted after its records reached the log (0: none). Prints one
 *     line per transaction: {"txn","outcome":"commit"|"abort","first","count"}
 *     (first: the index of its first input line).
 * consume --brokers B --topic T --schema S.avsc [--isolation read_committed]
 *         [--max N] [--timeout-ms 30000]
 *     Reads every partition from the beginning to its end (as of the start) and
 *     prints one JSON line per record: partition, offset, key and the decoded value,
 *     or "error" where it does not decode. Exits 1 if any record did not decode.
 * consume-dlq --brokers B --topic T [--schema S.avsc] [--isolation ...] [--max N]
 *         [--timeout-ms T]
 *     The same for dead letters: headers (as text), key, the original payload as
 *     base64 and, with --schema, the payload decoded or why it does not decode.
 * </pre>
 *
 * Every command takes {@code --framing single-object} (the default: Avro
 * single-object encoding) or {@code --framing confluent --schema-id N} (Confluent
 * wire format: 0x00, the 4-byte big-endian schema id, the datum). consume and
 * consume-dlq end with one JSON summary line on stderr: records, failed, and per
 * partition the consumer's final position and the end offsets it read to.
 */
public final class Peer {
    private Peer() {}

    public static void main(String[] argv) throws Exception {
        if (argv.length == 0) {
            usage("no command");
        }
        Args args = new Args(Arrays.copyOfRange(argv, 1, argv.length));
        int rc;
        switch (argv[0]) {
            case "produce" -> rc = Produce.run(args);
            case "consume" -> rc = Consume.run(args, false);
            case "consume-dlq" -> rc = Consume.run(args, true);
            default -> {
                usage("unknown command " + argv[0]);
                rc = 2;
            }
        }
        System.out.flush();
        System.exit(rc);
    }

    static void usage(String why) {
        System.err.println("riskstream java peer: " + why
                + "\nusage: produce|consume|consume-dlq --brokers B --topic T ... (see Peer.java)");
        System.exit(2);
    }
}
