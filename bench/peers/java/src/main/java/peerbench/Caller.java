package peerbench;

import com.alibaba.nacos.api.PropertyKeyConst;
import com.alibaba.nacos.api.naming.NamingFactory;
import com.alibaba.nacos.api.naming.NamingService;
import com.alibaba.nacos.api.naming.pojo.Instance;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.HttpURLConnection;
import java.net.InetSocketAddress;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Collectors;

/**
 * A Java caller as a Spring Cloud app without spring-retry calls a service: every call asks
 * nacos-client for the healthy instances ({@code selectInstances(service, true)}, which
 * subscribes on first use and is then served from the client's cache, kept current by server
 * push over gRPC on 2.x and 3.x), picks one round-robin and sends one HTTP GET, with no retry
 * on another instance.
 *
 * <p>Usage: {@code Caller SERVER_ADDR SERVICE PORT}. Serves on 127.0.0.1:PORT (0 picks one)
 * and prints {@code listening on 127.0.0.1:<port>}:
 * <ul>
 *   <li>{@code GET /call}: calls {@code GET http://<instance>/} of the service; 200 with the
 *       provider's body, or 502 when the call failed or no instance is listed;</li>
 *   <li>{@code GET /instances}: {@code {"instances":["ip:port", ...]}}, the list it picks
 *       from.</li>
 * </ul>
 */
public final class Caller {
    private static final AtomicInteger NEXT = new AtomicInteger();

    private Caller() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: Caller SERVER_ADDR SERVICE PORT");
            System.exit(2);
        }
        Properties props = new Properties();
        props.setProperty(PropertyKeyConst.SERVER_ADDR, args[0]);
        props.setProperty(PropertyKeyConst.NAMESPACE, "public");
        NamingService naming = NamingFactory.createNamingService(props);
        String service = args[1];
        // Subscribes now, as a Spring Cloud app does when it starts.
        naming.selectInstances(service, true);
        HttpServer server = HttpServer.create(
                new InetSocketAddress("127.0.0.1", Integer.parseInt(args[2])), 256);
        server.setExecutor(Executors.newFixedThreadPool(32));
        server.createContext("/call", exchange -> call(naming, service, exchange));
        server.createContext("/instances", exchange -> {
            String list;
            try {
                list = naming.selectInstances(service, true).stream()
                        .map(i -> "\"" + i.getIp() + ":" + i.getPort() + "\"")
                        .collect(Collectors.joining(","));
            } catch (Exception e) {
                list = "";
            }
            reply(exchange, 200, "{\"instances\":[" + list + "]}");
        });
        server.start();
        System.out.println("listening on 127.0.0.1:" + server.getAddress().getPort());
        System.out.flush();
    }

    private static void call(NamingService naming, String service, HttpExchange exchange)
            throws IOException {
        Instance instance;
        try {
            List<Instance> healthy = naming.selectInstances(service, true);
            if (healthy.isEmpty()) {
                reply(exchange, 502, "no instance\n");
                return;
            }
            instance = healthy.get(Math.floorMod(NEXT.getAndIncrement(), healthy.size()));
        } catch (Exception e) {
            reply(exchange, 502, "nacos: " + e + "\n");
            return;
        }
        String target = "http://" + instance.getIp() + ":" + instance.getPort() + "/";
        try {
            HttpURLConnection conn = (HttpURLConnection) new URL(target).openConnection();
            conn.setConnectTimeout(1000);
            conn.setReadTimeout(5000);
            int status = conn.getResponseCode();
            byte[] body;
            try (InputStream in = status < 400 ? conn.getInputStream() : conn.getErrorStream()) {
                body = in == null ? new byte[0] : in.readAllBytes();
            }
            reply(exchange, status == 200 ? 200 : 502, new String(body, StandardCharsets.UTF_8));
        } catch (IOException e) {
            reply(exchange, 502, target + ": " + e + "\n");
        }
    }

    private static void reply(HttpExchange exchange, int status, String body) throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        exchange.sendResponseHeaders(status, bytes.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(bytes);
        }
    }
}
