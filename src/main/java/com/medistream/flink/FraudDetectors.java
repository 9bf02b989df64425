package com.medistream.flink;

import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.state.StateTtlConfig;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.BasicTypeInfo;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * The fraud detectors in the JVM (decision 0055): keyed by member token, a fact row in
 * ({@code Row(member token, Row(FACT_FIELDS))} from {@link FraudFacts}), signal rows out ({@code udfs.fraud}
 * SIGNAL_FIELDS). The rules are {@link MemberEvidence}'s.
 *
 * <p>It takes over the Python operator's place and state as they were: the same uid ({@code fraud-signals}, set by
 * the caller), the same state names and types ({@code member-evidence}, a value of pickled bytes, and
 * {@code member-evidence-pieces}, a map of string to pickled bytes, both with the same time-to-live), the same key
 * and the same timer service ({@code user-timers}), so a savepoint taken behind the Python detectors restores here
 * with every member's evidence, fired ids and pending grace periods. A fact reads its member's own part and only
 * the pieces it adds to, and writes back only those it changed.
 *
 * <p>A signal count per rule is a Flink counter under the group the caller names, labelled by the rule.
 */
public final class FraudDetectors extends KeyedProcessFunction<Row, Row, Row> {

    private static final long serialVersionUID = 1L;
    static final String EVIDENCE = "member-evidence";
    static final String PIECES = "member-evidence-pieces";
    private static final String SIGNALS_METRIC = "fraudSignals";

    private final ArrayList<MemberEvidence.Rule> rules;
    private final String namespace;
    private final long stateTtlMs;
    private final int maxPending;
    private final int valueCleanupPerAccess;
    private final int mapCleanupPerAccess;
    private final String metricGroup;

    private transient MemberEvidence detectors;
    private transient ValueState<byte[]> evidence;
    private transient MapState<String, byte[]> pieces;
    private transient Map<String, Counter> signalCounts;
    private transient boolean[] decideLater;

    /**
     * @param rules the rules in force ({@code udfs.fraud.load_rules})
     * @param namespace the job's name, part of every signal id
     * @param stateTtlMs how long a member's own part and each piece live after the last fact that wrote them
     * @param valueCleanupPerAccess, mapCleanupPerAccess the heap backend's expired entries swept per state access
     *     ({@code jobs.runtime.expiring}); RocksDB cleans in its compactions
     */
    public FraudDetectors(List<MemberEvidence.Rule> rules, String namespace, long stateTtlMs, int maxPending,
            int valueCleanupPerAccess, int mapCleanupPerAccess, String metricGroup) {
        this.rules = new ArrayList<>(rules);
        this.namespace = namespace;
        this.stateTtlMs = stateTtlMs;
        this.maxPending = maxPending;
        this.valueCleanupPerAccess = valueCleanupPerAccess;
        this.mapCleanupPerAccess = mapCleanupPerAccess;
        this.metricGroup = metricGroup;
    }

    /** The time-to-live {@code jobs.runtime.expiring} gives a Python state descriptor, for one cleanup size. */
    private StateTtlConfig ttl(int cleanupPerAccess) {
        Duration ttl = Duration.ofMillis(stateTtlMs);
        return StateTtlConfig.newBuilder(ttl)
                .disableCleanupInBackground()
                .cleanupInRocksdbCompactFilter(1000, ttl)
                .cleanupIncrementally(cleanupPerAccess, false)
                .build();
    }

    @Override
    public void open(OpenContext context) {
        detectors = new MemberEvidence(rules, namespace, maxPending);
        ValueStateDescriptor<byte[]> own =
                new ValueStateDescriptor<>(EVIDENCE, PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO);
        own.enableTimeToLive(ttl(valueCleanupPerAccess));
        evidence = getRuntimeContext().getState(own);
        MapStateDescriptor<String, byte[]> split = new MapStateDescriptor<>(
                PIECES, BasicTypeInfo.STRING_TYPE_INFO, PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO);
        split.enableTimeToLive(ttl(mapCleanupPerAccess));
        pieces = getRuntimeContext().getMapState(split);
        MetricGroup group = getRuntimeContext().getMetricGroup().addGroup(metricGroup);
        signalCounts = new HashMap<>();
        for (MemberEvidence.Rule rule : rules) {
            signalCounts.put(rule.name, group.addGroup("rule", rule.name).counter(SIGNALS_METRIC));
        }
        decideLater = new boolean[1];
    }

    @Override
    public void processElement(Row keyed, Context ctx, Collector<Row> out) throws Exception {
        Row columns = (Row) keyed.getField(1);
        MemberEvidence.Fact fact = MemberEvidence.Fact.of(
                (String) columns.getField(0), (String) columns.getField(1), (String) columns.getField(2),
                (String) columns.getField(3), ((Number) columns.getField(4)).longValue(),
                (String) columns.getField(5), (String) columns.getField(6), (String) columns.getField(7),
                (String[][]) columns.getField(8), (String) columns.getField(9), (String) columns.getField(10));
        if (fact == null) {
            return;
        }
        MemberEvidence.State state = MemberEvidence.stateOf(evidence.value(), this::piece);
        List<MemberEvidence.Signal> signals = detectors.onFact(state, fact, decideLater);
        save(state);
        if (decideLater[0]) {
            long now = ctx.timerService().currentProcessingTime();
            ctx.timerService().registerProcessingTimeTimer(now + detectors.graceMs());
        }
        emit(signals, out);
    }

    @Override
    public void onTimer(long timestamp, OnTimerContext ctx, Collector<Row> out) throws Exception {
        byte[] own = evidence.value();
        if (own == null) {
            return;
        }
        MemberEvidence.State state = MemberEvidence.stateOf(own, this::piece);
        String member = (String) ctx.getCurrentKey().getField(0);
        List<MemberEvidence.Signal> signals = detectors.onTimer(state, member);
        save(state);
        emit(signals, out);
    }

    private byte[] piece(String key) {
        try {
            return pieces.get(key);
        } catch (Exception e) {
            throw new IllegalStateException("fraud evidence piece could not be read", e);
        }
    }

    /** Write back the member's own part and the pieces this fact or timer changed; delete those it removed. */
    private void save(MemberEvidence.State state) throws Exception {
        evidence.update(state.ownPickled());
        if (!state.changed.isEmpty()) {
            pieces.putAll(state.changedPickled());
        }
        for (String key : state.removedKeys()) { // decided or dropped pending claims (decision 0060)
            pieces.remove(key);
        }
    }

    private void emit(List<MemberEvidence.Signal> signals, Collector<Row> out) {
        if (signals.isEmpty()) {
            return;
        }
        long now = System.currentTimeMillis();
        String day = Instant.ofEpochMilli(now).atZone(ZoneOffset.UTC).toLocalDate().toString();
        for (MemberEvidence.Signal s : signals) {
            signalCounts.get(s.rule).inc();
            // SIGNAL_FIELDS order; dt is the day the signal was detected (UTC), the table's partition.
            out.collect(Row.of(s.signalId, s.rule, s.member, s.providerNpi, s.serviceDate, s.evidenceCount,
                    s.threshold, s.evidenceKeys, s.feed, now, s.ingestedAtMs, day));
        }
    }
}
