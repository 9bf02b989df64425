package com.medistream.flink;

import java.io.IOException;
import java.io.InputStream;

import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.connector.file.src.FileSourceSplit;
import org.apache.flink.connector.file.src.reader.BulkFormat;
import org.apache.flink.connector.file.src.util.CheckpointedPosition;
import org.apache.flink.connector.file.src.util.SingletonResultIterator;
import org.apache.flink.core.fs.FSDataInputStream;
import org.apache.flink.core.fs.FileSystem;
import org.apache.flink.types.Row;

/**
 * Reads each landed file as one record: (path, modification time in ms, size in bytes, payload).
 *
 * <p>CSV with quoted newlines, Avro container files and X12 interchanges cannot be split into
 * lines, so the Python decoders need the whole file. A file larger than {@code maxBytes} is emitted
 * with a null payload so the job dead-letters it by name instead of exhausting the heap.
 *
 * <p>Guarantee: the reader position (0 or 1 records read) is part of the split's checkpointed
 * state, so after a restore a file is emitted again only if the checkpoint was taken before it.
 */
public final class WholeFileFormat implements BulkFormat<Row, FileSourceSplit> {

    private static final long serialVersionUID = 1L;

    private final long maxBytes;

    public WholeFileFormat(long maxBytes) {
        this.maxBytes = maxBytes;
    }

    @Override
    public Reader<Row> createReader(Configuration config, FileSourceSplit split) {
        return new WholeFileReader(split, maxBytes, false);
    }

    @Override
    public Reader<Row> restoreReader(Configuration config, FileSourceSplit split) {
        boolean done = split.getReaderPosition()
                .map(position -> position.getRecordsAfterOffset() > 0)
                .orElse(false);
        return new WholeFileReader(split, maxBytes, done);
    }

    @Override
    public boolean isSplittable() {
        return false;
    }

    @Override
    public TypeInformation<Row> getProducedType() {
        return Types.ROW_NAMED(
                new String[] {"path", "modified_ms", "size", "payload"},
                Types.STRING, Types.LONG, Types.LONG, Types.PRIMITIVE_ARRAY(Types.BYTE));
    }

    private static final class WholeFileReader implements BulkFormat.Reader<Row> {
        private final FileSourceSplit split;
        private final long maxBytes;
        private boolean done;

        WholeFileReader(FileSourceSplit split, long maxBytes, boolean done) {
            this.split = split;
            this.maxBytes = maxBytes;
            this.done = done;
        }

        @Override
        public RecordIterator<Row> readBatch() throws IOException {
            if (done) {
                return null;
            }
            done = true;
            long size = split.fileSize();
            byte[] payload = size > maxBytes ? null : readAll(size);
            Row row = Row.of(split.path().toString(), split.fileModificationTime(), size, payload);
            SingletonResultIterator<Row> batch = new SingletonResultIterator<>();
            batch.set(row, CheckpointedPosition.NO_OFFSET, 1L);
            return batch;
        }

        private byte[] readAll(long size) throws IOException {
            FileSystem fs = split.path().getFileSystem();
            try (FSDataInputStream in = fs.open(split.path())) {
                return readFully(in, (int) size);
            }
        }

        private static byte[] readFully(InputStream in, int size) throws IOException {
            byte[] buffer = new byte[size];
            int read = 0;
            while (read < size) {
                int n = in.read(buffer, read, size - read);
                if (n < 0) {
                    throw new IOException("file shorter than its listed size: " + read + " of " + size);
                }
                read += n;
            }
            return buffer;
        }

        @Override
        public void close() {}
    }
}
