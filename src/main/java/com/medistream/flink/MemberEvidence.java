package com.medistream.flink;

import java.io.IOException;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.Function;
import net.razorvine.pickle.Opcodes;
import net.razorvine.pickle.Pickler;
import net.razorvine.pickle.Unpickler;

/**
 * One member's fraud evidence and the rules over it: the JVM form of {@code udfs.fraud.MemberDetector},
 * signal for signal (decision 0055; {@code tests/flink/test_fraud_detectors.py} holds the two side by side).
 *
 * <p>The state is the same builtins the Python detectors keep, pickled the same way, so a savepoint of either
 * restores into the other: the member's own part {@code (4, spans, fired, next sequence, blocks)} in one value, and
 * its pieces as {@code (entries, fired ids)} in a map of which a fact reads and writes only the ones it adds to: a
 * providers window, a service day (decision 0044), a claim pending for coverage spans and the pending claims'
 * arrival order in blocks (decision 0060). Version 2 and 3 states are split into pieces on their member's first
 * fact, as {@code udfs.fraud.state_from_plain} does.
 *
 * <p>Each rule is decided by the set of records seen, never by their order, and a signal's id (its rule and
 * keys, digested) is emitted once per member: a re-send or a replay adds nothing.
 */
public final class MemberEvidence {

    public static final String PROVIDERS_PER_MEMBER_DAY = "providers_per_member_day";
    public static final String SERVICE_AMOUNT_MISMATCH = "service_amount_mismatch";
    public static final String SERVICE_OUTSIDE_ELIGIBILITY = "service_outside_eligibility";
    static final int STATE_VERSION = 4;
    static final int PENDING_BLOCK = 32; // pending claims per order block (udfs.fraud.PENDING_BLOCK)
    private static final String VOID = "8";
    private static final String REPLACEMENT = "7";

    /** One declared rule (schemas/fraud/rules.yaml, read and checked by {@code udfs.fraud.load_rules}). */
    public static final class Rule implements java.io.Serializable {
        private static final long serialVersionUID = 1L;
        final String name;
        final String kind;
        final int windowDays;
        final int threshold;
        final long graceMs;

        public Rule(String name, String kind, int windowDays, int threshold, long graceMs) {
            if (!Arrays.asList(PROVIDERS_PER_MEMBER_DAY, SERVICE_AMOUNT_MISMATCH, SERVICE_OUTSIDE_ELIGIBILITY)
                    .contains(kind)) {
                throw new IllegalArgumentException("fraud rule " + name + ": unknown kind " + kind);
            }
            if (windowDays < 1) {
                throw new IllegalArgumentException("fraud rule " + name + ": window_days must be at least 1");
            }
            this.name = name;
            this.kind = kind;
            this.windowDays = windowDays;
            this.threshold = threshold;
            this.graceMs = graceMs;
        }
    }

    /** One detected pattern, in the order of {@code udfs.fraud.Signal}'s fields. */
    public static final class Signal {
        public final String signalId;
        public final String rule;
        public final String member;
        public final String providerNpi;
        public final String serviceDate;
        public final int evidenceCount;
        public final int threshold;
        public final String evidenceKeys; // business keys (digests), sorted, comma-separated
        public final String feed;
        public final long ingestedAtMs;

        Signal(String signalId, String rule, String member, String providerNpi, String serviceDate,
                int evidenceCount, int threshold, Collection<String> evidence, String feed, long ingestedAtMs) {
            this.signalId = signalId;
            this.rule = rule;
            this.member = member;
            this.providerNpi = providerNpi;
            this.serviceDate = serviceDate;
            this.evidenceCount = evidenceCount;
            this.threshold = threshold;
            this.evidenceKeys = String.join(",", new TreeSet<>(evidence));
            this.feed = feed;
            this.ingestedAtMs = ingestedAtMs;
        }
    }

    /** A claim's service line as the rules read it: procedure code, canonical amount, date of service. */
    static final class Line {
        final String procedure;
        final String charge;
        final String serviceDate;

        Line(String procedure, String charge, String serviceDate) {
            this.procedure = procedure;
            this.charge = charge;
            this.serviceDate = serviceDate;
        }
    }

    /** What the rules read of one accepted claim or eligibility record: tokens, codes, dates, amounts. */
    public static final class Fact {
        final String member;
        final String recordType;
        final String businessKey;
        final String feed;
        final long ingestedAtMs;
        final String billingNpi;
        final String frequencyCode;
        final String serviceDate;
        final List<Line> lines;
        final String coverageStart;
        final String coverageEnd;

        Fact(String member, String recordType, String businessKey, String feed, long ingestedAtMs,
                String billingNpi, String frequencyCode, String serviceDate, List<Line> lines,
                String coverageStart, String coverageEnd) {
            this.member = member;
            this.recordType = recordType;
            this.businessKey = businessKey;
            this.feed = feed;
            this.ingestedAtMs = ingestedAtMs;
            this.billingNpi = billingNpi;
            this.frequencyCode = frequencyCode;
            this.serviceDate = serviceDate;
            this.lines = lines;
            this.coverageStart = coverageStart;
            this.coverageEnd = coverageEnd;
        }

        /**
         * The fact of an accepted row's columns ({@code jobs/fraud_operator.py} FACT_FIELDS order); null for
         * another record type or a record without a member token, as {@code udfs.fraud.fact_of}.
         *
         * @param lines each line's texts in CLAIM_LINE_FIELDS order (line_number, procedure_code, modifiers,
         *     units, charge, service_date)
         */
        public static Fact of(String member, String recordType, String businessKey, String feed,
                long ingestedAtMs, String billingNpi, String frequencyCode, String serviceDateFrom,
                String[][] lines, String coverageStart, String coverageEnd) {
            if (member == null || member.isEmpty()) {
                return null;
            }
            if ("eligibility".equals(recordType)) {
                return new Fact(member, recordType, businessKey, feed, ingestedAtMs, null, null, null,
                        List.of(), coverageStart, coverageEnd);
            }
            if (!"claim".equals(recordType)) {
                return null;
            }
            List<Line> kept = new ArrayList<>();
            if (lines != null) {
                for (String[] texts : lines) {
                    String charge = money(texts[4]);
                    if (texts[1] != null && !texts[1].isEmpty() && charge != null) {
                        String day = texts[5] != null && !texts[5].isEmpty() ? texts[5]
                                : serviceDateFrom != null ? serviceDateFrom : "";
                        kept.add(new Line(texts[1], charge, day));
                    }
                }
            }
            return new Fact(member, recordType, businessKey, feed, ingestedAtMs, billingNpi, frequencyCode,
                    serviceDateFrom, kept, null, null);
        }
    }

    /** One piece of a member's evidence: its entries and the signal ids it fired. */
    static final class Piece {
        final Map<String, Object> entries;
        final Set<String> fired;

        Piece(Map<String, Object> entries, Set<String> fired) {
            this.entries = entries;
            this.fired = fired;
        }
    }

    /** A claim waiting for its member's coverage spans. */
    static final class Pending {
        final String day;
        final String feed;
        final long ingestedAtMs;

        Pending(String day, String feed, long ingestedAtMs) {
            this.day = day;
            this.feed = feed;
            this.ingestedAtMs = ingestedAtMs;
        }
    }

    /**
     * One member's state while a fact or a timer is decided: its own part, and the pieces read so far. Pieces expire
     * on their own (30 days after their last write): an order block or a pending claim that reads as absent is gone
     * and is skipped; {@code blocks} counts what each block held when it was last known.
     */
    public static final class State {
        final Set<List<String>> spans = new LinkedHashSet<>(); // (start, end or null: open coverage)
        final Set<String> fired = new HashSet<>(); // the eligibility rule's ids (and every rule's, before v3)
        long nextSeq; // the sequence number of the next pending claim
        final LinkedHashMap<Long, Integer> blocks = new LinkedHashMap<>(); // order block -> its claims, oldest first
        final Map<String, Piece> pieces = new HashMap<>();
        final Set<String> changed = new LinkedHashSet<>();
        final Set<String> removed = new LinkedHashSet<>();
        private final Function<String, byte[]> load;

        State(Function<String, byte[]> load) {
            this.load = load;
        }

        Piece piece(String key) {
            Piece found = lookup(key);
            if (found == null) {
                found = new Piece(new LinkedHashMap<>(), new HashSet<>());
                pieces.put(key, found);
            }
            return found;
        }

        private Piece lookup(String key) {
            if (removed.contains(key)) {
                return null;
            }
            Piece found = pieces.get(key);
            if (found == null && load != null) {
                byte[] pickled = load.apply(key);
                if (pickled != null) {
                    found = pieceOf(pickled);
                    pieces.put(key, found);
                }
            }
            return found;
        }

        private void put(String key, Piece piece) {
            pieces.put(key, piece);
            removed.remove(key);
            changed.add(key);
        }

        private void remove(String key) {
            pieces.remove(key);
            changed.remove(key);
            removed.add(key);
        }

        int pendingCount() {
            int count = 0;
            for (int n : blocks.values()) {
                count += n;
            }
            return count;
        }

        /** Keep a claim until coverage spans decide it; beyond {@code maxPending} the oldest goes. A re-send of a
         * claim still pending keeps its place (as a dict's assignment does) and its latest values. */
        void addPending(String key, Pending claim, long maxPending) {
            Piece found = lookup(pendingPiece(key));
            if (found != null) {
                long seq = ((Number) found.entries.get("seq")).longValue();
                long block = seq / PENDING_BLOCK; // one this member still counts: a piece left behind is not pending
                Piece order = blocks.containsKey(block) ? lookup(orderPiece(block)) : null;
                if (order != null && key.equals(order.entries.get(Long.toString(seq)))) {
                    found.entries.put("day", claim.day);
                    found.entries.put("feed", claim.feed);
                    found.entries.put("ingested_at_ms", claim.ingestedAtMs);
                    changed.add(pendingPiece(key));
                    changed.add(orderPiece(block)); // rewritten: it lives as long as its claims
                    return;
                }
            }
            long seq = nextSeq++;
            long block = seq / PENDING_BLOCK;
            Piece order = piece(orderPiece(block));
            order.entries.put(Long.toString(seq), key);
            put(orderPiece(block), order);
            blocks.merge(block, 1, Integer::sum);
            Map<String, Object> entries = new LinkedHashMap<>();
            entries.put("seq", seq);
            entries.put("day", claim.day);
            entries.put("feed", claim.feed);
            entries.put("ingested_at_ms", claim.ingestedAtMs);
            put(pendingPiece(key), new Piece(entries, new HashSet<>()));
            while (pendingCount() > maxPending) {
                dropOldest();
            }
        }

        private void dropOldest() {
            long block = blocks.keySet().iterator().next();
            Piece order = lookup(orderPiece(block));
            if (order == null || order.entries.isEmpty()) { // expired, or emptied: its claims went with it
                blocks.remove(block);
                remove(orderPiece(block));
                return;
            }
            Map.Entry<String, Object> oldest = order.entries.entrySet().iterator().next();
            String seq = oldest.getKey();
            String key = (String) oldest.getValue();
            order.entries.remove(seq);
            forget(key, Long.parseLong(seq));
            int left = blocks.get(block) - 1;
            if (!order.entries.isEmpty() && left > 0) {
                blocks.put(block, left);
                changed.add(orderPiece(block));
            } else {
                blocks.remove(block);
                remove(orderPiece(block));
            }
        }

        private void forget(String key, long seq) {
            Piece found = lookup(pendingPiece(key));
            if (found != null && ((Number) found.entries.get("seq")).longValue() == seq) {
                remove(pendingPiece(key));
            }
        }

        /** The pending claims, oldest first; expired ones skipped. */
        LinkedHashMap<String, Pending> pendingClaims() {
            LinkedHashMap<String, Pending> claims = new LinkedHashMap<>();
            for (long block : blocks.keySet()) {
                Piece order = lookup(orderPiece(block));
                if (order == null) {
                    continue;
                }
                for (Map.Entry<String, Object> entry : order.entries.entrySet()) {
                    String key = (String) entry.getValue();
                    Piece found = lookup(pendingPiece(key));
                    if (found != null && ((Number) found.entries.get("seq")).longValue()
                            == Long.parseLong(entry.getKey())) {
                        claims.put(key, new Pending((String) found.entries.get("day"),
                                (String) found.entries.get("feed"),
                                ((Number) found.entries.get("ingested_at_ms")).longValue()));
                    }
                }
            }
            return claims;
        }

        /** Forget every pending claim (they were decided): their pieces and blocks are deleted. */
        void clearPending() {
            for (long block : blocks.keySet()) {
                Piece order = lookup(orderPiece(block));
                if (order != null) {
                    for (Map.Entry<String, Object> entry : order.entries.entrySet()) {
                        forget((String) entry.getValue(), Long.parseLong(entry.getKey()));
                    }
                }
                remove(orderPiece(block));
            }
            blocks.clear();
        }

        /** The member's own part, pickled as {@code udfs.fraud.state_to_plain} gives it. */
        public byte[] ownPickled() {
            Set<Object> spanTuples = new HashSet<>();
            for (List<String> span : spans) {
                spanTuples.add(span.toArray());
            }
            return pickle(new Object[] {STATE_VERSION, spanTuples, new HashSet<>(fired), nextSeq,
                new LinkedHashMap<>(blocks)});
        }

        /** The pieces a fact or timer changed, pickled, to write back. */
        public Map<String, byte[]> changedPickled() {
            Map<String, byte[]> out = new HashMap<>();
            for (String key : changed) {
                Piece piece = pieces.get(key);
                out.put(key, pickle(new Object[] {piece.entries, piece.fired}));
            }
            return out;
        }

        /** The pieces a fact or timer deleted (decided or dropped pending claims, their emptied blocks). */
        public Set<String> removedKeys() {
            return removed;
        }
    }

    private final List<Rule> providers = new ArrayList<>();
    private final List<Rule> amounts = new ArrayList<>();
    private final List<Rule> eligibility = new ArrayList<>();
    private final String namespace;
    private final int maxPending;
    private final long graceMs;

    public MemberEvidence(List<Rule> rules, String namespace, int maxPending) {
        long grace = 0;
        for (Rule rule : rules) {
            if (PROVIDERS_PER_MEMBER_DAY.equals(rule.kind)) {
                providers.add(rule);
            } else if (SERVICE_AMOUNT_MISMATCH.equals(rule.kind)) {
                amounts.add(rule);
            } else {
                eligibility.add(rule);
                grace = Math.max(grace, rule.graceMs);
            }
        }
        this.namespace = namespace;
        this.maxPending = maxPending;
        this.graceMs = grace;
    }

    /** How long a claim outside every known span waits for more spans before it is decided. */
    public long graceMs() {
        return graceMs;
    }

    /**
     * A member's state from its pickled own part (null: a member not seen yet); its pieces are read through
     * {@code load} when a fact needs them (null from it: no such piece yet).
     */
    public static State stateOf(byte[] own, Function<String, byte[]> load) {
        State state = new State(load);
        if (own == null) {
            return state;
        }
        Object[] plain = (Object[]) unpickle(own);
        int version = plain[0] instanceof Integer || plain[0] instanceof Long ? ((Number) plain[0]).intValue() : -1;
        if (version != STATE_VERSION && version != 3 && version != 2) {
            throw new IllegalStateException("fraud evidence state version " + plain[0] + " is not one these"
                    + " detectors read (2, 3 or " + STATE_VERSION + "): restore the savepoint with the release that"
                    + " wrote it");
        }
        // v4: (4, spans, fired, next sequence, blocks); v3: (3, spans, pending, fired);
        // v2: (2, claims, providers, services, spans, pending, fired)
        int spansAt = version == 2 ? 4 : 1;
        int firedAt = version == STATE_VERSION ? 2 : spansAt + 2;
        for (Object span : (Collection<?>) plain[spansAt]) {
            Object[] pair = (Object[]) span;
            state.spans.add(Arrays.asList((String) pair[0], (String) pair[1]));
        }
        for (Object id : (Collection<?>) plain[firedAt]) {
            state.fired.add((String) id);
        }
        if (version == STATE_VERSION) {
            state.nextSeq = ((Number) plain[3]).longValue();
            for (Map.Entry<?, ?> block : ((Map<?, ?>) plain[4]).entrySet()) {
                state.blocks.put(((Number) block.getKey()).longValue(), ((Number) block.getValue()).intValue());
            }
            return state;
        }
        if (version == 2) {
            splitVersion2(state, (List<?>) plain[1], (Map<?, ?>) plain[2], (Map<?, ?>) plain[3]);
        }
        // Versions 2 and 3 kept the pending claims in the own part, bounded when written: split out in their order.
        for (Map.Entry<?, ?> claim : ((Map<?, ?>) plain[spansAt + 1]).entrySet()) {
            Object[] p = (Object[]) claim.getValue();
            state.addPending((String) claim.getKey(),
                    new Pending((String) p[0], (String) p[1], ((Number) p[2]).longValue()), Long.MAX_VALUE);
        }
        return state;
    }

    /** A version 2 state's evidence as pieces, all marked changed so the first fact after an upgrade writes them. */
    private static void splitVersion2(State state, List<?> claims, Map<?, ?> providers, Map<?, ?> services) {
        for (Map.Entry<?, ?> window : providers.entrySet()) {
            Object[] ruleWindow = (Object[]) window.getKey();
            Map<String, Object> seen = new LinkedHashMap<>();
            for (Map.Entry<?, ?> npi : ((Map<?, ?>) window.getValue()).entrySet()) {
                seen.put((String) npi.getKey(), claims.get(((Number) npi.getValue()).intValue()));
            }
            state.pieces.put(providersPiece((String) ruleWindow[0], (String) ruleWindow[1]),
                    new Piece(seen, new HashSet<>()));
        }
        for (Map.Entry<?, ?> service : services.entrySet()) {
            Object[] npiProcedureDay = (Object[]) service.getKey();
            String key = servicePiece((String) npiProcedureDay[0], (String) npiProcedureDay[2]);
            Piece piece = state.pieces.computeIfAbsent(key, k -> new Piece(new LinkedHashMap<>(), new HashSet<>()));
            Map<String, Object> billed = new LinkedHashMap<>();
            for (Map.Entry<?, ?> amount : ((Map<?, ?>) service.getValue()).entrySet()) {
                List<Object> keys = new ArrayList<>();
                for (Object index : (Collection<?>) amount.getValue()) {
                    keys.add(claims.get(((Number) index).intValue()));
                }
                billed.put((String) amount.getKey(), keys);
            }
            piece.entries.put((String) npiProcedureDay[1], billed);
        }
        state.changed.addAll(state.pieces.keySet());
    }

    /** The signals {@code fact} completes; {@code decideLater[0]} says whether to decide pending claims after
     * the grace period. */
    public List<Signal> onFact(State state, Fact fact, boolean[] decideLater) {
        decideLater[0] = false;
        List<Signal> signals = new ArrayList<>();
        if ("eligibility".equals(fact.recordType)) {
            if (fact.coverageStart == null || fact.coverageStart.isEmpty()) {
                return signals;
            }
            String end = fact.coverageEnd == null || fact.coverageEnd.isEmpty() ? null : fact.coverageEnd;
            state.spans.add(Arrays.asList(fact.coverageStart, end));
            decideLater[0] = state.pendingCount() > 0 && !eligibility.isEmpty();
            return signals;
        }
        if (VOID.equals(fact.frequencyCode) || fact.serviceDate == null || fact.serviceDate.isEmpty()) {
            return signals;
        }
        providers(state, fact, signals);
        amounts(state, fact, signals);
        // A claim inside a known span is decided: spans only add coverage. Others wait for the grace period,
        // which starts now if the member has spans, else when its first eligibility record comes.
        if (!eligibility.isEmpty() && !covered(fact.serviceDate, state.spans)) {
            state.addPending(fact.businessKey, new Pending(fact.serviceDate, fact.feed, fact.ingestedAtMs), maxPending);
            decideLater[0] = !state.spans.isEmpty();
        }
        return signals;
    }

    /** The grace period ended: decide the member's pending claims against the spans known now. */
    public List<Signal> onTimer(State state, String member) {
        List<Signal> signals = new ArrayList<>();
        if (state.spans.isEmpty()) {
            return signals;
        }
        for (Map.Entry<String, Pending> claim : state.pendingClaims().entrySet()) {
            Pending p = claim.getValue();
            if (!covered(p.day, state.spans)) {
                Fact fact = new Fact(member, "claim", claim.getKey(), p.feed, p.ingestedAtMs, null, null, p.day,
                        List.of(), null, null);
                for (Rule rule : eligibility) {
                    fire(state, null, rule, fact, List.of(claim.getKey()), state.spans.size(), rule.threshold,
                            null, p.day, signals, claim.getKey());
                }
            }
        }
        state.clearPending();
        return signals;
    }

    private void providers(State state, Fact fact, List<Signal> signals) {
        if (fact.billingNpi == null || fact.billingNpi.isEmpty()) {
            return;
        }
        for (Rule rule : providers) {
            String start = windowStart(fact.serviceDate, rule.windowDays);
            String key = providersPiece(rule.name, start);
            Map<String, Object> seen = state.piece(key).entries;
            if (!seen.containsKey(fact.billingNpi)) {
                seen.put(fact.billingNpi, fact.businessKey);
                state.changed.add(key);
            }
            if (seen.size() > rule.threshold) {
                List<String> evidence = new ArrayList<>();
                for (Object k : seen.values()) {
                    evidence.add((String) k);
                }
                fire(state, key, rule, fact, evidence, seen.size(), rule.threshold, null, start, signals);
            }
        }
    }

    @SuppressWarnings("unchecked")
    private void amounts(State state, Fact fact, List<Signal> signals) {
        // A replacement claim re-bills its original with the corrected amount: not a second bill.
        if (fact.billingNpi == null || fact.billingNpi.isEmpty() || REPLACEMENT.equals(fact.frequencyCode)) {
            return;
        }
        for (Rule rule : amounts) {
            for (Line line : fact.lines) {
                String key = servicePiece(fact.billingNpi, line.serviceDate);
                Map<String, Object> services = state.piece(key).entries;
                Map<String, Object> billed =
                        (Map<String, Object>) services.computeIfAbsent(line.procedure, p -> new LinkedHashMap<>());
                List<Object> claims = (List<Object>) billed.computeIfAbsent(line.charge, c -> new ArrayList<>());
                if (!claims.contains(fact.businessKey)) {
                    claims.add(fact.businessKey);
                    state.changed.add(key);
                }
                Set<String> keys = new HashSet<>();
                for (Object found : billed.values()) {
                    for (Object k : (List<Object>) found) {
                        keys.add((String) k);
                    }
                }
                // Two claims (business keys) and `threshold` amounts: some pair of claims bills it differently.
                if (billed.size() >= rule.threshold && keys.size() >= 2) {
                    // One signal per member, provider and date: its other services billed twice add nothing.
                    fire(state, key, rule, fact, keys, billed.size(), rule.threshold, fact.billingNpi,
                            line.serviceDate, signals);
                }
            }
        }
    }

    /** Emit the signal once: its id is kept in the piece that made it (the member's own part for null). */
    private void fire(State state, String piece, Rule rule, Fact fact, Collection<String> evidence, int count,
            int threshold, String npi, String day, List<Signal> signals, String... keys) {
        String[] parts = new String[5 + keys.length];
        parts[0] = namespace;
        parts[1] = rule.name;
        parts[2] = fact.member;
        parts[3] = npi;
        parts[4] = day;
        System.arraycopy(keys, 0, parts, 5, keys.length);
        String id = signalId(parts);
        Set<String> fired = piece != null ? state.piece(piece).fired : state.fired;
        if (fired.contains(id) || state.fired.contains(id)) {
            return;
        }
        fired.add(id);
        if (piece != null) {
            state.changed.add(piece);
        }
        signals.add(new Signal(id, rule.name, fact.member, npi, day, count, threshold, evidence, fact.feed,
                fact.ingestedAtMs));
    }

    /** A signal's id: its job, rule and keys joined by U+001F, SHA-256, the first 128 bits in hex. */
    static String signalId(String... parts) {
        StringBuilder joined = new StringBuilder();
        for (int i = 0; i < parts.length; i++) {
            if (i > 0) {
                joined.append('\u001f');
            }
            joined.append(parts[i] == null ? "" : parts[i]);
        }
        try {
            byte[] digest = MessageDigest.getInstance("SHA-256")
                    .digest(joined.toString().getBytes(StandardCharsets.UTF_8));
            StringBuilder hex = new StringBuilder(32);
            for (int i = 0; i < 16; i++) {
                hex.append(Character.forDigit((digest[i] >> 4) & 0xf, 16)).append(Character.forDigit(digest[i] & 0xf, 16));
            }
            return hex.toString();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is part of every Java runtime", e);
        }
    }

    /**
     * An amount's canonical text, as {@code udfs.fraud.money}: 12.5 and 12.50 are one amount (Python's
     * {@code str(Decimal(text).normalize())}); null when absent or not a finite number.
     */
    static String money(String text) {
        if (text == null) {
            return null;
        }
        try {
            BigDecimal amount = new BigDecimal(text.strip()).stripTrailingZeros();
            return amount.signum() == 0 ? "0" : amount.toString();
        } catch (NumberFormatException e) {
            return null;
        }
    }

    static String windowStart(String day, int windowDays) {
        long offset = LocalDate.parse(day).toEpochDay();
        return LocalDate.ofEpochDay(offset - Math.floorMod(offset, (long) windowDays)).toString();
    }

    static boolean covered(String day, Set<List<String>> spans) {
        for (List<String> span : spans) {
            String end = span.get(1);
            if (span.get(0).compareTo(day) <= 0 && (end == null || day.compareTo(end) <= 0)) {
                return true;
            }
        }
        return false;
    }

    static String providersPiece(String rule, String window) {
        return "p\u001f" + rule + "\u001f" + window;
    }

    static String servicePiece(String npi, String day) {
        return "s\u001f" + npi + "\u001f" + day;
    }

    static String pendingPiece(String key) {
        return "c\u001f" + key;
    }

    static String orderPiece(long block) {
        return "q\u001f" + block;
    }

    @SuppressWarnings("unchecked")
    private static Piece pieceOf(byte[] pickled) {
        Object[] plain = (Object[]) unpickle(pickled);
        Set<String> fired = new HashSet<>();
        for (Object id : (Collection<?>) plain[1]) {
            fired.add((String) id);
        }
        return new Piece((Map<String, Object>) plain[0], fired);
    }

    static byte[] pickle(Object value) {
        try {
            // A memo by identity, as Python's pickle keeps one: a claim's business key in each of its lines' lists
            // is written once (a 25-line piece: 940 bytes, not 5,854; without it, a 12 KB run's state grew about
            // fivefold and its RocksDB reads came to dominate the task). Never by value: two equal lists pickled as
            // one object would be one list in Python, and an append to either would change both.
            return new Pickler(true, false).dumps(value);
        } catch (IOException e) {
            throw new IllegalStateException("fraud evidence could not be pickled", e);
        }
    }

    static Object unpickle(byte[] pickled) {
        try {
            return new OrderedUnpickler().loads(pickled);
        } catch (IOException e) {
            throw new IllegalStateException("fraud evidence could not be read (" + e.getClass().getSimpleName() + ")");
        }
    }

    /** Pyrolite's Unpickler with Python's dict order kept: pending claims are dropped oldest first. */
    private static final class OrderedUnpickler extends Unpickler {
        @Override
        @SuppressWarnings("unchecked")
        protected Object dispatch(short key) throws IOException {
            if (key == Opcodes.EMPTY_DICT) {
                stack.add(new LinkedHashMap<>());
                return NO_RETURN_VALUE;
            }
            if (key == Opcodes.SETITEMS) {
                List<Object> items = stack.pop_all_since_marker();
                Map<Object, Object> dict = (Map<Object, Object>) stack.peek();
                for (int i = 0; i + 1 < items.size(); i += 2) {
                    dict.put(items.get(i), items.get(i + 1));
                }
                return NO_RETURN_VALUE;
            }
            return super.dispatch(key);
        }
    }
}
