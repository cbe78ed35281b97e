package riskstream.kstreams;

import java.util.Map;

import org.apache.kafka.streams.state.RocksDBConfigSetter;
import org.rocksdb.BlockBasedTableConfig;
import org.rocksdb.Cache;
import org.rocksdb.LRUCache;
import org.rocksdb.Options;
import org.rocksdb.WriteBufferManager;

/**
 * Bounds RocksDB's off-heap memory for every store of the instance together (the
 * Kafka Streams documentation's "bounded memory" recipe): one LRU block cache,
 * index and filter blocks inside it, and memtables charged to it through one
 * write buffer manager. Without it each store (one per task, plus the global
 * one) takes a 50 MB block cache and three 16 MB memtables of its own.
 */
public final class BoundedRocksDb implements RocksDBConfigSetter {
    /** Total bytes, set by {@link Main} before the client starts. */
    static volatile long totalBytes = 64L << 20;
    private static Cache cache;
    private static WriteBufferManager writeBuffers;

    private static synchronized void open() {
        if (cache == null) {
            cache = new LRUCache(totalBytes, -1, false, 0.1);
            writeBuffers = new WriteBufferManager(totalBytes / 4, cache);
        }
    }

    @Override
    public void setConfig(String storeName, Options options, Map<String, Object> configs) {
        open();
        BlockBasedTableConfig table = (BlockBasedTableConfig) options.tableFormatConfig();
        table.setBlockCache(cache);
        table.setCacheIndexAndFilterBlocks(true);
        table.setCacheIndexAndFilterBlocksWithHighPriority(true);
        table.setPinTopLevelIndexAndFilter(true);
        options.setWriteBufferManager(writeBuffers);
        options.setMaxWriteBufferNumber(2);
        options.setWriteBufferSize(Math.max(1L << 20, totalBytes / 16));
        options.setTableFormatConfig(table);
    }

    @Override
    public void close(String storeName, Options options) {
        // The cache and the write buffer manager are shared: never closed per store.
    }
}
