package dev.outboxkit.bench;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.connect.header.Header;
import org.apache.kafka.connect.source.SourceRecord;
import org.apache.kafka.connect.storage.Converter;
import org.apache.kafka.connect.storage.HeaderConverter;
import org.apache.kafka.connect.storage.SimpleHeaderConverter;
import org.apache.kafka.connect.storage.StringConverter;

import io.debezium.converters.BinaryDataConverter;
import io.debezium.embedded.Connect;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.ChangeEvent;

/**
 * The Debezium peer of {@code make bench-peers}: Debezium's embedded engine
 * streams inserts into outboxkit's {@code outbox} table from a pgoutput
 * replication slot, the outbox EventRouter SMT turns each row into a routed
 * record, and a KafkaProducer writes it to Kafka. A batch's source offsets
 * are marked processed only after Kafka acknowledged every record of it, as
 * a Kafka Connect worker does.
 *
 * <p>Configuration comes from the environment (see {@link #env}); the harness
 * in bench/peers sets it. DBZ_EXTRA adds or overrides engine properties
 * ("key=value" lines). It prints {@code debezium-started} on stdout when the
 * connector task has started, and stops cleanly on SIGTERM (offsets flushed).
 */
public final class DebeziumRelay {
    private DebeziumRelay() {
    }

    static String env(String name, String fallback) {
        String v = System.getenv(name);
        if (v == null || v.isEmpty()) {
            if (fallback == null) {
                System.err.println("debezium-relay: " + name + " is required");
                System.exit(2);
            }
            return fallback;
        }
        return v;
    }

    /** Engine properties: connector, slot, offsets and the outbox EventRouter mapped onto outboxkit's columns. */
    static Properties engineProperties() {
        Properties p = new Properties();
        p.setProperty("name", "outboxkit-bench-debezium");
        p.setProperty("connector.class", "io.debezium.connector.postgresql.PostgresConnector");
        p.setProperty("offset.storage", "org.apache.kafka.connect.storage.FileOffsetBackingStore");
        p.setProperty("offset.storage.file.filename", env("DBZ_OFFSETS_FILE", null));
        p.setProperty("database.hostname", env("PG_HOST", "127.0.0.1"));
        p.setProperty("database.port", env("PG_PORT", "5433"));
        p.setProperty("database.user", env("PG_USER", "postgres"));
        p.setProperty("database.password", env("PG_PASSWORD", "postgres"));
        p.setProperty("database.dbname", env("PG_DB", null));
        p.setProperty("topic.prefix", "outboxkit-bench");
        p.setProperty("plugin.name", "pgoutput");
        p.setProperty("slot.name", env("DBZ_SLOT", null));
        p.setProperty("publication.name", env("DBZ_PUBLICATION", null));
        p.setProperty("publication.autocreate.mode", "filtered");
        p.setProperty("table.include.list", "public.outbox");
        // Stream new rows only: the outbox table is a queue, not state to snapshot.
        p.setProperty("snapshot.mode", "no_data");

        // The outbox EventRouter, mapped onto outboxkit's table: event id = id
        // (the "id" header), key = aggregate_id, value = payload (bytea, passed
        // through as bytes), topic = the row's topic column as is.
        p.setProperty("transforms", "outbox");
        p.setProperty("transforms.outbox.type", "io.debezium.transforms.outbox.EventRouter");
        p.setProperty("transforms.outbox.table.field.event.id", "id");
        p.setProperty("transforms.outbox.table.field.event.key", "aggregate_id");
        p.setProperty("transforms.outbox.table.field.event.payload", "payload");
        p.setProperty("transforms.outbox.route.by.field", "topic");
        p.setProperty("transforms.outbox.route.topic.replacement", "${routedByValue}");
        p.setProperty("transforms.outbox.table.fields.additional.placement",
                "event_type:header:event_type,aggregate_type:header:aggregate_type,headers:header:headers");

        String extra = System.getenv("DBZ_EXTRA");
        if (extra != null) {
            for (String line : extra.split("\n")) {
                int eq = line.indexOf('=');
                if (eq > 0) {
                    p.setProperty(line.substring(0, eq).trim(), line.substring(eq + 1).trim());
                }
            }
        }
        return p;
    }

    public static void main(String[] args) throws Exception {
        Map<String, Object> pc = new HashMap<>();
        pc.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, env("KAFKA_BROKERS", null));
        pc.put(ProducerConfig.CLIENT_ID_CONFIG, "outboxkit-bench-debezium");
        pc.put(ProducerConfig.ACKS_CONFIG, "all");
        // The client's default since Kafka 3.0, stated here: retries cannot
        // duplicate or reorder a partition's records.
        pc.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        pc.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        pc.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pc);

        // The converters a Kafka Connect worker would apply with
        // key.converter=StringConverter, value.converter=BinaryDataConverter
        // (what the EventRouter docs give for binary payloads) and the default
        // SimpleHeaderConverter.
        Converter keyConverter = new StringConverter();
        keyConverter.configure(Map.of(), true);
        Converter valueConverter = new BinaryDataConverter();
        valueConverter.configure(Map.of(
                "delegate.converter.type", "org.apache.kafka.connect.json.JsonConverter",
                "delegate.converter.type.schemas.enable", "false"), false);
        HeaderConverter headerConverter = new SimpleHeaderConverter();
        headerConverter.configure(Map.of());

        DebeziumEngine.ChangeConsumer<ChangeEvent<SourceRecord, SourceRecord>> consumer = (records, committer) -> {
            List<Future<RecordMetadata>> acks = new ArrayList<>(records.size());
            for (ChangeEvent<SourceRecord, SourceRecord> ev : records) {
                SourceRecord r = ev.value();
                if (r == null || r.topic() == null) {
                    continue;
                }
                RecordHeaders headers = new RecordHeaders();
                for (Header h : r.headers()) {
                    headers.add(h.key(), headerConverter.fromConnectHeader(r.topic(), h.key(), h.schema(), h.value()));
                }
                byte[] key = keyConverter.fromConnectData(r.topic(), headers, r.keySchema(), r.key());
                byte[] value = valueConverter.fromConnectData(r.topic(), headers, r.valueSchema(), r.value());
                acks.add(producer.send(new ProducerRecord<>(r.topic(), null, r.timestamp(), key, value, headers)));
            }
            for (Future<RecordMetadata> f : acks) {
                try {
                    f.get();
                }
                catch (ExecutionException e) {
                    throw new RuntimeException("kafka: " + e.getCause(), e.getCause());
                }
            }
            for (ChangeEvent<SourceRecord, SourceRecord> ev : records) {
                committer.markProcessed(ev);
            }
            committer.markBatchFinished();
        };

        CountDownLatch done = new CountDownLatch(1);
        AtomicBoolean failed = new AtomicBoolean();
        DebeziumEngine<ChangeEvent<SourceRecord, SourceRecord>> engine = DebeziumEngine.create(Connect.class)
                .using(engineProperties())
                .notifying(consumer)
                .using(new DebeziumEngine.ConnectorCallback() {
                    @Override
                    public void taskStarted() {
                        System.out.println("debezium-started");
                        System.out.flush();
                    }
                })
                .using((success, message, error) -> {
                    if (!success) {
                        failed.set(true);
                        System.err.println("debezium-relay: engine stopped: " + message + (error != null ? ": " + error : ""));
                    }
                    done.countDown();
                })
                .build();

        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                engine.close();
                done.await();
            }
            catch (Exception e) {
                System.err.println("debezium-relay: close: " + e);
            }
            producer.close();
        }));
        Thread runner = new Thread(engine, "debezium-engine");
        runner.start();
        done.await();
        runner.join();
        // A failed engine is an error exit; SIGTERM goes through the hook.
        System.exit(failed.get() ? 1 : 0);
    }
}
