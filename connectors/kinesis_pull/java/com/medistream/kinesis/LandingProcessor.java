package com.medistream.kinesis;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.ByteArraySerializer;

import software.amazon.kinesis.exceptions.InvalidStateException;
import software.amazon.kinesis.exceptions.ShutdownException;
import software.amazon.kinesis.lifecycle.events.InitializationInput;
import software.amazon.kinesis.lifecycle.events.LeaseLostInput;
import software.amazon.kinesis.lifecycle.events.ProcessRecordsInput;
import software.amazon.kinesis.lifecycle.events.ShardEndedInput;
import software.amazon.kinesis.lifecycle.events.ShutdownRequestedInput;
import software.amazon.kinesis.processor.RecordProcessorCheckpointer;
import software.amazon.kinesis.processor.ShardRecordProcessor;
import software.amazon.kinesis.retrieval.KinesisClientRecord;

/**
 * One shard's processor: each batch KCL hands over is produced to raw.&lt;feed&gt; together with the shard's
 * cursor (its last landed sequence number) in one Kafka transaction, which is committed before the KCL
 * checkpoint is written. The cursor's key is {@code <stream>@<creation ms>/<shardId>}.
 *
 * <p>Guarantee: every record of the shard becomes visible to read_committed readers exactly once. The
 * transactional id is stable per shard ({@code <prefix>.<stream>.<shardId>}): opening the processor fences any
 * older holder of the shard (a crashed or lease-lost worker) and aborts its open transaction; the cursor is
 * read after that, so it is the truth. Records KCL delivers again (after a crash between the Kafka commit and
 * the checkpoint) at or below the cursor are skipped. The Kafka record key is the Kinesis partition key, so one
 * device's events keep their order on one partition. Child shards start after their parents end (KCL), each
 * with a cursor of its own.
 */
final class LandingProcessor implements ShardRecordProcessor {
    static final String ORIGIN_HEADER = "medistream-kinesis-origin";

    private final KinesisPull.Settings s;
    private String shardId = "";
    private String cursorKey = "";
    private KafkaProducer<byte[], byte[]> producer;
    private ShardCursors.Position landed;  // the last record in a committed transaction; null: none yet
    private boolean fenced;
    private long batches;
    private long records;
    private long skipped;

    LandingProcessor(KinesisPull.Settings settings) {
        this.s = settings;
    }

    @Override
    public void initialize(InitializationInput input) {
        shardId = input.shardId();
        cursorKey = s.stream + "@" + s.streamEpochMs + "/" + shardId;
        Properties p = new Properties();
        p.put("bootstrap.servers", s.bootstrap);
        p.put("transactional.id", s.transactionalPrefix + "." + s.stream + "." + shardId);
        p.put("enable.idempotence", "true");
        p.put("acks", "all");
        p.put("linger.ms", "5");
        p.put("transaction.timeout.ms", "60000");
        p.put("client.id", "kinesis-pull-" + shardId);
        producer = new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer());
        producer.initTransactions();  // fences an older holder of this shard first ...
        landed = ShardCursors.read(s.bootstrap, s.cursorTopic, cursorKey);  // ... so this cursor is final
        System.err.println("kinesis_pull: shard " + shardId + " from checkpoint " + input.extendedSequenceNumber()
                + ", landed up to " + (landed == null ? "nothing" : landed));
    }

    @Override
    public void processRecords(ProcessRecordsInput input) {
        List<KinesisClientRecord> batch = input.records();
        if (fenced || batch.isEmpty()) {
            return;
        }
        List<KinesisClientRecord> fresh = new ArrayList<>(batch.size());
        for (KinesisClientRecord r : batch) {
            if (landed == null || ShardCursors.Position.of(r).compareTo(landed) > 0) {
                fresh.add(r);
            }
        }
        skipped += batch.size() - fresh.size();
        if (fresh.size() < batch.size()) {  // a re-read after a crash (or a lost checkpoint): say how far it is
            System.err.println("kinesis_pull: shard " + shardId + " re-read, skipped=" + skipped
                    + " already landed");
        }
        if (!fresh.isEmpty()) {
            land(fresh);
            if (fenced) {
                return;
            }
        }
        KinesisClientRecord last = batch.get(batch.size() - 1);
        checkpoint(input.checkpointer(), last.sequenceNumber(), last.subSequenceNumber());
    }

    private void land(List<KinesisClientRecord> fresh) {
        ShardCursors.Position top = ShardCursors.Position.of(fresh.get(fresh.size() - 1));
        for (int attempt = 1; ; attempt++) {
            try {
                producer.beginTransaction();
                for (KinesisClientRecord r : fresh) {
                    ProducerRecord<byte[], byte[]> out = new ProducerRecord<>(s.rawTopic, null,
                            r.partitionKey().getBytes(StandardCharsets.UTF_8), bytes(r.data()));
                    out.headers().add(ORIGIN_HEADER, (cursorKey + "@" + ShardCursors.Position.of(r))
                            .getBytes(StandardCharsets.UTF_8));
                    producer.send(out);
                }
                producer.send(new ProducerRecord<>(s.cursorTopic, cursorKey.getBytes(StandardCharsets.UTF_8),
                        top.toString().getBytes(StandardCharsets.UTF_8)));
                producer.commitTransaction();
                landed = top;
                batches++;
                records += fresh.size();
                if (batches % 100 == 1) {
                    System.err.println("kinesis_pull: shard " + shardId + " batches=" + batches + " records="
                            + records + " skipped=" + skipped + " landed=" + landed);
                }
                return;
            } catch (ProducerFencedException | InvalidProducerEpochException e) {
                // Another worker holds this shard now and landed from the cursor it read after fencing us.
                System.err.println("kinesis_pull: shard " + shardId + " fenced by a newer holder; stopping it here");
                fenced = true;
                producer.close();
                return;
            } catch (KafkaException e) {
                try {
                    producer.abortTransaction();
                } catch (KafkaException abort) {
                    halt("shard " + shardId + ": abort failed: " + abort);
                }
                if (attempt >= s.retryMaxAttempts) {
                    // Never skip a batch: exit, and the restart reads it again from the last checkpoint.
                    halt("shard " + shardId + ": " + attempt + " transactions aborted in a row: " + e);
                }
                System.err.println("kinesis_pull: shard " + shardId + " transaction aborted (" + e + "), retrying");
                sleep(s.retryBackoffMs * attempt);
            }
        }
    }

    private void checkpoint(RecordProcessorCheckpointer checkpointer, String sequence, long sub) {
        for (int attempt = 1; ; attempt++) {
            try {
                if (sequence == null) {
                    checkpointer.checkpoint();
                } else {
                    checkpointer.checkpoint(sequence, sub);
                }
                return;
            } catch (ShutdownException e) {
                return;  // the lease is gone; the next holder skips what we landed by the cursor
            } catch (InvalidStateException e) {
                halt("shard " + shardId + ": checkpoint store refused: " + e);
            } catch (Exception e) {  // throttling or a DynamoDB outage: retry, bounded
                if (attempt >= s.retryMaxAttempts) {
                    halt("shard " + shardId + ": checkpoint failed " + attempt + " times: " + e);
                }
                sleep(s.retryBackoffMs * attempt);
            }
        }
    }

    @Override
    public void leaseLost(LeaseLostInput input) {
        System.err.println("kinesis_pull: shard " + shardId + " lease lost");
        close();
    }

    @Override
    public void shardEnded(ShardEndedInput input) {
        // The parent is read to its end (a split or merge): checkpointing SHARD_END lets KCL start the children.
        System.err.println("kinesis_pull: shard " + shardId + " ended after " + records + " records");
        checkpoint(input.checkpointer(), null, 0);
        close();
    }

    @Override
    public void shutdownRequested(ShutdownRequestedInput input) {
        if (landed != null && !fenced) {
            checkpoint(input.checkpointer(), landed.sequence.toString(), landed.sub);
        }
        close();
    }

    private void close() {
        System.err.println("kinesis_pull: shard " + shardId + " closed: batches=" + batches + " records=" + records
                + " skipped=" + skipped + " landed=" + landed);
        if (producer != null && !fenced) {
            producer.close();
        }
        producer = null;
    }

    private static byte[] bytes(ByteBuffer data) {
        byte[] out = new byte[data.remaining()];
        data.duplicate().get(out);
        return out;
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private static void halt(String why) {
        System.err.println("kinesis_pull: fatal: " + why);
        Runtime.getRuntime().halt(70);
    }

}
