package com.medistream.kinesis;

import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

import software.amazon.kinesis.retrieval.KinesisClientRecord;

/** The cursor topic (compacted, key {@code <stream>/<shardId>}): each shard's last landed position. */
final class ShardCursors {
    private ShardCursors() {}

    /** A record's place in its shard: sequence number, then sub-sequence number (aggregated records). */
    static final class Position implements Comparable<Position> {
        final BigInteger sequence;
        final long sub;

        Position(BigInteger sequence, long sub) {
            this.sequence = sequence;
            this.sub = sub;
        }

        static Position of(KinesisClientRecord r) {
            return new Position(new BigInteger(r.sequenceNumber()), r.subSequenceNumber());
        }

        static Position parse(String text) {
            int colon = text.indexOf(':');
            return colon < 0 ? new Position(new BigInteger(text), 0)
                    : new Position(new BigInteger(text.substring(0, colon)), Long.parseLong(text.substring(colon + 1)));
        }

        @Override
        public int compareTo(Position o) {
            int c = sequence.compareTo(o.sequence);
            return c != 0 ? c : Long.compare(sub, o.sub);
        }

        @Override
        public String toString() {
            return sequence + ":" + sub;
        }
    }

    /** The committed cursor of one shard (read_committed, to the topic's end), or null if it has none. */
    static Position read(String bootstrap, String topic, String key) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("isolation.level", "read_committed");
        p.put("enable.auto.commit", "false");
        p.put("client.id", "kinesis-pull-cursors");
        Position found = null;
        try (KafkaConsumer<byte[], byte[]> consumer =
                     new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            List<PartitionInfo> infos = consumer.partitionsFor(topic, Duration.ofSeconds(30));
            List<TopicPartition> parts = infos.stream().map(i -> new TopicPartition(topic, i.partition())).toList();
            consumer.assign(parts);
            consumer.seekToBeginning(parts);
            Map<TopicPartition, Long> ends = consumer.endOffsets(parts, Duration.ofSeconds(30));
            long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            while (parts.stream().anyMatch(tp -> consumer.position(tp) < ends.get(tp))) {
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("cursor topic " + topic + " not read to its end in 60 s");
                }
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
                    if (r.key() != null && r.value() != null
                            && key.equals(new String(r.key(), StandardCharsets.UTF_8))) {
                        found = Position.parse(new String(r.value(), StandardCharsets.UTF_8));
                    }
                }
            }
        }
        return found;
    }
}
