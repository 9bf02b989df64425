package com.medistream.kinesis;

import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

import software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider;
import software.amazon.awssdk.http.Protocol;
import software.amazon.awssdk.http.nio.netty.NettyNioAsyncHttpClient;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.services.cloudwatch.CloudWatchAsyncClient;
import software.amazon.awssdk.services.dynamodb.DynamoDbAsyncClient;
import software.amazon.awssdk.services.kinesis.KinesisAsyncClient;
import software.amazon.kinesis.common.ConfigsBuilder;
import software.amazon.kinesis.common.InitialPositionInStream;
import software.amazon.kinesis.common.InitialPositionInStreamExtended;
import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.metrics.MetricsLevel;
import software.amazon.kinesis.metrics.NullMetricsFactory;
import software.amazon.kinesis.retrieval.polling.PollingConfig;

/**
 * The Kinesis door's worker: a KCL 3 Scheduler (leases and checkpoints in DynamoDB, polling reads) whose
 * record processors land every record on raw.&lt;feed&gt; in Kafka transactions (see {@link LandingProcessor}).
 *
 * <p>Started by jobs/kinesis_pull.py (which validates the property groups and execs this JVM) with one
 * argument: a properties file of the settings below. SIGTERM shuts the scheduler down gracefully: each
 * processor commits or aborts the batch in hand and checkpoints what was committed. A SIGKILL at any point
 * loses nothing: records after the last KCL checkpoint are read again, and those already in a committed
 * Kafka transaction are skipped by their shard's cursor.
 */
public final class KinesisPull {
    private KinesisPull() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: KinesisPull <settings.properties>");
            System.exit(2);
        }
        Properties p = new Properties();
        try (InputStream in = new FileInputStream(args[0])) {
            p.load(in);
        }
        Settings s = Settings.from(p);
        Region region = Region.of(s.region);
        DefaultCredentialsProvider credentials = DefaultCredentialsProvider.create();
        // Polling reads need no HTTP/2 (that is for enhanced fan-out), and a plain-http endpoint refuses it.
        var kinesisBuilder = KinesisAsyncClient.builder().region(region).credentialsProvider(credentials)
                .httpClientBuilder(NettyNioAsyncHttpClient.builder().protocol(Protocol.HTTP1_1).maxConcurrency(64));
        var dynamoBuilder = DynamoDbAsyncClient.builder().region(region).credentialsProvider(credentials);
        var cloudWatchBuilder = CloudWatchAsyncClient.builder().region(region).credentialsProvider(credentials);
        if (!s.endpoint.isEmpty()) {
            URI endpoint = URI.create(s.endpoint);
            kinesisBuilder.endpointOverride(endpoint);
            dynamoBuilder.endpointOverride(endpoint);
            cloudWatchBuilder.endpointOverride(endpoint);
        }
        KinesisAsyncClient kinesis = kinesisBuilder.build();
        DynamoDbAsyncClient dynamo = dynamoBuilder.build();
        CloudWatchAsyncClient cloudWatch = cloudWatchBuilder.build();
        String workerId = s.workerId.isEmpty() ? UUID.randomUUID().toString() : s.workerId;
        // Cursors are keyed by the stream's creation time too: a stream deleted and created again under the same
        // name starts new sequence numbers, which must not be compared with the old stream's cursors.
        s.streamEpochMs = kinesis.describeStreamSummary(b -> b.streamName(s.stream)).join()
                .streamDescriptionSummary().streamCreationTimestamp().toEpochMilli();

        ConfigsBuilder configs = new ConfigsBuilder(s.stream, s.application, kinesis, dynamo, cloudWatch, workerId,
                () -> new LandingProcessor(s));
        PollingConfig polling = new PollingConfig(s.stream, kinesis)
                .maxRecords(s.maxRecords)
                .idleTimeBetweenReadsInMillis(s.idleBetweenReadsMs);
        var retrieval = configs.retrievalConfig().retrievalSpecificConfig(polling);
        retrieval.initialPositionInStreamExtended(
                InitialPositionInStreamExtended.newInitialPosition(InitialPositionInStream.TRIM_HORIZON));
        var metrics = configs.metricsConfig();
        if (!s.cloudWatchMetrics) {
            metrics.metricsFactory(new NullMetricsFactory()).metricsLevel(MetricsLevel.NONE);
        }
        var leases = configs.leaseManagementConfig()
                .failoverTimeMillis(s.failoverTimeMs)
                .shardSyncIntervalMillis(s.shardSyncIntervalMs);
        var coordinator = configs.coordinatorConfig().parentShardPollIntervalMillis(s.parentShardPollMs);
        Scheduler scheduler = new Scheduler(configs.checkpointConfig(), coordinator, leases,
                configs.lifecycleConfig(), metrics, configs.processorConfig(), retrieval);

        // SIGTERM: KCL hands the leases back and waits for its consumers (bounded). Every landed batch was committed
        // with its shard's cursor before its checkpoint, so the stop is clean whether or not that wait finishes (it
        // never does against the local API, decision 0039): exit 0, not the JVM's 143 for a signal, as a supervisor
        // (and the contract suite) reads a deliberate stop.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                scheduler.startGracefulShutdown().get(s.shutdownTimeoutMs, TimeUnit.MILLISECONDS);
                System.err.println("kinesis_pull: stopped, leases handed back");
            } catch (Exception e) {
                System.err.println("kinesis_pull: stopped; KCL's graceful shutdown did not finish within "
                        + s.shutdownTimeoutMs + " ms (" + e.getClass().getSimpleName() + "): the next holder of "
                        + "each shard resumes from its checkpoint and skips up to its cursor");
            }
            System.err.flush();
            Runtime.getRuntime().halt(0);
        }, "kinesis-pull-shutdown"));
        System.err.println("kinesis_pull: worker " + workerId + " consuming stream " + s.stream + " into "
                + s.rawTopic + " (lease table " + s.application + ")");
        Thread worker = new Thread(scheduler, "kcl-scheduler");
        worker.start();
        worker.join();
    }

    /** The worker's settings, written by jobs/kinesis_pull.py from the property groups it validated. */
    static final class Settings {
        String stream, application, region, endpoint, workerId, rawTopic, cursorTopic, bootstrap, transactionalPrefix;
        int maxRecords;
        long idleBetweenReadsMs, failoverTimeMs, shardSyncIntervalMs, parentShardPollMs, shutdownTimeoutMs;
        long retryBackoffMs;
        long streamEpochMs;
        int retryMaxAttempts;
        boolean cloudWatchMetrics;

        static Settings from(Properties p) throws IOException {
            Settings s = new Settings();
            s.stream = need(p, "stream");
            s.application = need(p, "application");
            s.region = need(p, "region");
            s.endpoint = p.getProperty("endpoint", "");
            s.workerId = p.getProperty("worker.id", "");
            s.rawTopic = need(p, "raw.topic");
            s.cursorTopic = need(p, "cursor.topic");
            s.bootstrap = need(p, "bootstrap.servers");
            s.transactionalPrefix = need(p, "transactional.id.prefix");
            s.maxRecords = Integer.parseInt(p.getProperty("max.records", "1000"));
            s.idleBetweenReadsMs = Long.parseLong(p.getProperty("idle.between.reads.ms", "200"));
            s.failoverTimeMs = Long.parseLong(p.getProperty("failover.time.ms", "10000"));
            s.shardSyncIntervalMs = Long.parseLong(p.getProperty("shard.sync.interval.ms", "10000"));
            s.parentShardPollMs = Long.parseLong(p.getProperty("parent.shard.poll.ms", "10000"));
            s.shutdownTimeoutMs = Long.parseLong(p.getProperty("shutdown.timeout.ms", "20000"));
            s.retryBackoffMs = Long.parseLong(p.getProperty("retry.backoff.ms", "500"));
            s.retryMaxAttempts = Integer.parseInt(p.getProperty("retry.max.attempts", "6"));
            s.cloudWatchMetrics = Boolean.parseBoolean(p.getProperty("cloudwatch.metrics", "false"));
            return s;
        }

        private static String need(Properties p, String key) throws IOException {
            String v = p.getProperty(key);
            if (v == null || v.isEmpty()) {
                throw new IOException("setting '" + key + "' is missing");
            }
            return v;
        }
    }
}
