package riskstream.kstreams;

import java.io.File;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.stream.Stream;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.state.Stores;

/**
 * riskstream's scoring job as a Kafka Streams application (Processor API):
 *
 * <pre>
 *   input topic ──> [transactions] ──> [score] ──> [scored] ──> output topic
 *   (key = customer id)                  │  │  └──> [dead-letters] ──> dead-letter topic
 *                                        │  └─ customer-windows (RocksDB, changelogged; per task)
 *                                        └──── terminal-labels (global, RocksDB) <── [label-fold] <── labels topic
 * </pre>
 *
 * No repartition: the input is keyed by customer id (`riskstream replay` and the
 * producers riskstream documents write it so), so one customer's transactions
 * are on one partition, in order, and its windows live in that partition's task.
 */
public final class Main {
    static final String CUSTOMER_STORE = "customer-windows";
    static final String LABEL_STORE = "terminal-labels";
    static final String SOURCE = "transactions";
    static final String SCORE = "score";
    static final String SCORED = "scored";
    static final String DEAD_LETTERS = "dead-letters";

    private Main() {}

    public static void main(String[] argv) throws Exception {
        Options o;
        try {
            o = new Options(argv);
            o.required("model");
        } catch (IllegalArgumentException e) {
            System.err.println((e.getMessage().isEmpty() ? "" : "kstreams-peer: " + e.getMessage() + "\n")
                    + Options.USAGE);
            System.exit(2);
            return;
        }
        System.exit(run(o));
    }

    static Topology topology(ScoringProcessor.Settings s, String input, String labels, String output,
                             String dlq) {
        Topology t = new Topology();
        t.addSource(SOURCE, new ByteArrayDeserializer(), new ByteArrayDeserializer(), input);
        t.addProcessor(SCORE, () -> new ScoringProcessor(s), SOURCE);
        t.addStateStore(Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(CUSTOMER_STORE), Serdes.String(), CustomerHistory.SERDE), SCORE);
        t.addSink(SCORED, output, new ByteArraySerializer(), new ByteArraySerializer(), SCORE);
        if (!dlq.isEmpty()) {
            t.addSink(DEAD_LETTERS, dlq, new ByteArraySerializer(), new ByteArraySerializer(), SCORE);
        }
        // A global store's "changelog" is its source topic: logging must be off.
        t.addGlobalStore(
                Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(LABEL_STORE), Serdes.String(),
                        TerminalLabels.SERDE).withLoggingDisabled(),
                "labels", new ByteArrayDeserializer(), new ByteArrayDeserializer(), labels,
                "label-fold", () -> new LabelFold(s.schemas()));
        return t;
    }

    static int run(Options o) throws Exception {
        String brokers = o.get("brokers", Optional.ofNullable(System.getenv("RISKSTREAM_BROKERS"))
                .orElse("127.0.0.1:9092"));
        String input = o.get("input-topic", "transactions");
        String labels = o.get("labels-topic", "transactions.labels");
        String output = o.get("output-topic", "transactions.scored");
        String dlq = o.get("dlq-topic", "transactions.dlq");
        String guarantee = o.get("processing-guarantee", StreamsConfig.AT_LEAST_ONCE);
        if (!Set.of(StreamsConfig.AT_LEAST_ONCE, StreamsConfig.EXACTLY_ONCE_V2).contains(guarantee)) {
            System.err.println("kstreams-peer: --processing-guarantee at_least_once|exactly_once_v2");
            return 2;
        }
        long maxRecords = o.getLong("max-records", 0);
        File schemas = new File(o.get("schemas", "schemas"));
        Model model = new Model(new File(o.required("model")));
        new WireCodec(schemas); // fail here, not in a stream thread, on a bad schema directory
        BoundedRocksDb.totalBytes = o.getLong("rocksdb-cache-mb", 64) << 20;

        Properties admin = new Properties();
        admin.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
        try (Admin a = Admin.create(admin)) {
            Set<String> have = a.listTopics().names().get();
            for (String need : List.of(input, labels)) {
                if (!have.contains(need)) {
                    System.err.println("kstreams-peer: topic " + need + " does not exist");
                    return 1;
                }
            }
            // Output topics, as riskstream creates them when missing (the cluster's replication factor).
            List<NewTopic> create = new ArrayList<>();
            for (String t : dlq.isEmpty() ? List.of(output) : List.of(output, dlq)) {
                if (!have.contains(t)) {
                    create.add(new NewTopic(t, Optional.of((int) o.getLong("topic-partitions", 4)),
                            Optional.empty()));
                }
            }
            if (!create.isEmpty()) {
                try {
                    a.createTopics(create).all().get();
                } catch (java.util.concurrent.ExecutionException e) {
                    if (!(e.getCause() instanceof org.apache.kafka.common.errors.TopicExistsException)) {
                        throw e;
                    }
                }
            }
        }

        String given = o.get("state-dir", "");
        Path stateDir = given.isEmpty() ? Files.createTempDirectory("kstreams-peer-") : Path.of(given);
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, o.get("application-id", "riskstream-kstreams"));
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, (int) o.getLong("threads", 1));
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        p.put(StreamsConfig.ROCKSDB_CONFIG_SETTER_CLASS_CONFIG, BoundedRocksDb.class);
        // The producer acknowledges outputs to Progress (counts delivered records).
        p.put(StreamsConfig.producerPrefix(ProducerConfig.INTERCEPTOR_CLASSES_CONFIG),
                Progress.Deliveries.class.getName());
        // commit.interval.ms, caching, acks and idempotence: Kafka Streams' defaults
        // (30 s at least once, 100 ms exactly once; 10 MB record cache).

        ScoringProcessor.Settings settings = new ScoringProcessor.Settings(model, schemas, input, !dlq.isEmpty());
        Progress.outputTopic = output;
        Progress.dlqTopic = dlq;
        if (maxRecords > 0) {
            Progress.target = maxRecords;
        }
        long jvmStart = ManagementFactory.getRuntimeMXBean().getStartTime();
        KafkaStreams streams = new KafkaStreams(topology(settings, input, labels, output, dlq), p);
        int[] rc = {0};
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("kstreams-peer: stream thread failed: " + e);
            e.printStackTrace();
            rc[0] = 1;
            Progress.STOP.countDown();
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.setStateListener((now, before) -> {
            System.err.printf("kstreams-peer: %s -> %s at %.2f s (labels folded: %d)%n", before, now,
                    (System.currentTimeMillis() - jvmStart) / 1e3, Progress.LABELS.get());
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.PENDING_ERROR) {
                rc[0] = 1;
                Progress.STOP.countDown();
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(Progress.STOP::countDown));
        streams.start();
        Progress.STOP.await();
        // close(): stops processing, flushes the stores and the producer, commits.
        boolean closed = streams.close(Duration.ofSeconds(60));
        long handled = Progress.HANDLED.get();
        double active = (Progress.lastNanos - Progress.firstNanos) / 1e9;
        double rate = handled > 1 && active > 0 ? (handled - 1) / active : 0.0;
        double firstOutput = handled > 0 ? (Progress.firstMillis - jvmStart) / 1e3 : -1.0;
        System.err.printf("kstreams-peer: dead_letters=%d labels=%d bad_labels=%d active_seconds=%.3f closed=%s%n",
                Progress.DEAD_LETTERS.get(), Progress.LABELS.get(), Progress.BAD_LABELS.get(), active, closed);
        System.out.printf("records=%d records_per_second=%.1f first_output_seconds=%.3f%n", handled, rate,
                firstOutput);
        System.out.flush();
        if (given.isEmpty()) {
            streams.cleanUp();
            try (Stream<Path> walk = Files.walk(stateDir)) {
                walk.sorted(Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
            } catch (IOException e) {
                System.err.println("kstreams-peer: cannot remove " + stateDir + ": " + e);
            }
        }
        if (!closed) {
            rc[0] = 1;
        }
        return rc[0] == 0 && (maxRecords == 0 || handled >= maxRecords) ? 0 : 1;
    }
}
