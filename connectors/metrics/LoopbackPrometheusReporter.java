// Flink's Prometheus reporter, bound to one address (127.0.0.1) instead of every interface.
//
// flink-metrics-prometheus 2.2.1 opens its HTTP server on new InetSocketAddress(port): the wildcard
// address, with no option to change it (docs/decisions/0027-metrics-and-alerts.md). This class keeps
// all of the reporter's metric handling (AbstractPrometheusReporter) and only opens the server on
// `host` (default 127.0.0.1). It is in the reporter's package because the registry it serves is
// package-private there; both jars sit in one plugin folder, so one class loader defines the package.
//
// Options (metrics.reporter.<name>.*): factory.class =
// org.apache.flink.metrics.prometheus.LoopbackPrometheusReporterFactory, host, port (a range: the
// first free port is taken), targets.dir (optional: a Prometheus file_sd JSON naming the endpoint is
// written there on start and removed on close, so a scrape config needs no port list).
package org.apache.flink.metrics.prometheus;

import io.prometheus.client.exporter.HTTPServer;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.Iterator;
import org.apache.flink.util.PortRange;

public class LoopbackPrometheusReporter extends AbstractPrometheusReporter {
    private final HTTPServer httpServer;
    private final Path targetFile;

    LoopbackPrometheusReporter(String host, PortRange ports, String targetsDir) {
        HTTPServer server = null;
        int bound = -1;
        Iterator<Integer> it = ports.getPortsIterator();
        while (server == null && it.hasNext()) {
            int port = it.next();
            try {
                server = new HTTPServer(new InetSocketAddress(host, port), registry, true);
                bound = port;
            } catch (IOException e) {
                log.debug("Could not start the Prometheus reporter on {}:{}", host, port);
            }
        }
        if (server == null) {
            throw new RuntimeException("Could not start the Prometheus reporter on " + host + " in " + ports);
        }
        httpServer = server;
        log.info("Started the Prometheus reporter on {}:{}", host, bound);
        targetFile = targetsDir == null || targetsDir.isEmpty() ? null : announce(targetsDir, host, bound);
    }

    private Path announce(String dir, String host, int port) {
        // file_sd: Prometheus re-reads the folder; a file per process, named by pid so a dead one can be pruned.
        String pid = ManagementFactory.getRuntimeMXBean().getName().split("@")[0];
        Path target = Paths.get(dir, "flink-" + pid + "-" + port + ".json");
        String json = "[{\"targets\":[\"" + host + ":" + port + "\"],\"labels\":{\"component\":\"flink\"}}]\n";
        try {
            Files.createDirectories(target.getParent());
            Path tmp = Paths.get(dir, "." + target.getFileName() + ".tmp");
            Files.write(tmp, json.getBytes(StandardCharsets.UTF_8));
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            return target;
        } catch (IOException e) {
            log.warn("Could not write the scrape target file {}: {}", target, e.toString());
            return null;  // metrics are still served; a scrape config can name the port itself
        }
    }

    @Override
    public void close() {
        if (targetFile != null) {
            try {
                Files.deleteIfExists(targetFile);
            } catch (IOException e) {
                log.warn("Could not remove {}", targetFile);
            }
        }
        httpServer.stop();
        super.close();
    }
}
