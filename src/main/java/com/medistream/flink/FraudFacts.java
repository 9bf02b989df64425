package com.medistream.flink;

import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * The fraud detectors' facts, projected in the JVM from the ingest operator's accepted rows.
 *
 * <p>An accepted claim or eligibility record with a member token becomes {@code Row(member token,
 * Row(fact columns))}, to be keyed on its first field the way PyFlink keys a stream; any other row gives
 * nothing. The fact's columns are the accepted row's own, in the order the caller names them
 * ({@code jobs/fraud_operator.py} FACT_FIELDS, the member token first), so the Python ingest operator
 * builds, pickles and hands over nothing for the detectors (decision 0054). Chained to the ingest
 * operator, it costs a few field copies per record.
 */
public final class FraudFacts implements FlatMapFunction<Row, Row> {

    private static final long serialVersionUID = 1L;

    private final int recordTypeField;
    private final int[] factFields;

    /**
     * @param recordTypeField the accepted row's record-type field
     * @param factFields the accepted row's fields that make a fact, in the fact's order; the first is the
     *     member token, the key
     */
    public FraudFacts(int recordTypeField, int[] factFields) {
        if (factFields.length == 0) {
            throw new IllegalArgumentException("a fact needs at least the member token's field");
        }
        this.recordTypeField = recordTypeField;
        this.factFields = factFields.clone();
    }

    @Override
    public void flatMap(Row accepted, Collector<Row> out) {
        Object member = accepted.getField(factFields[0]);
        Object recordType = accepted.getField(recordTypeField);
        if (member == null || "".equals(member)
                || !("claim".equals(recordType) || "eligibility".equals(recordType))) {
            return;
        }
        Row fact = new Row(factFields.length);
        for (int i = 0; i < factFields.length; i++) {
            fact.setField(i, accepted.getField(factFields[i]));
        }
        out.collect(Row.of(member, fact));
    }
}
