package peerbench;

import com.alibaba.nacos.api.PropertyKeyConst;
import com.alibaba.nacos.api.naming.NamingFactory;
import com.alibaba.nacos.api.naming.NamingService;
import com.alibaba.nacos.api.naming.pojo.Instance;

import java.lang.reflect.Method;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

/**
 * Peer runner: registers N ephemeral instances through nacos-client's public
 * API and lets the client keep them alive for the given time (1.4.x: HTTP
 * beats from its BeatReactor; 2.x: its gRPC connection).
 *
 * <p>Usage: {@code Runner SERVER_ADDR N SECONDS SERVICE_PREFIX}. Instances are
 * {@code 10.255.x.y:port} (never contacted), in service {@code <prefix>-<peer>}
 * ({@code -Dpeerbench.peer}, default {@code java}), or spread round-robin over
 * {@code <prefix>-<peer>-<k>} with {@code PEER_SERVICES=S} (S > 1).
 *
 * <p>{@code -Dpeerbench.register=single} (default) calls registerInstance once
 * per instance; {@code batch} calls batchRegisterInstance once per service, as
 * a 2.x user with many instances of one service must (over gRPC the client
 * holds one instance per service, a second registerInstance replaces the
 * first). batchRegisterInstance does not exist in 1.4.x, so it is looked up by
 * reflection and this file compiles against both.
 *
 * <p>Prints {@code registered_ms=<ms>} (first request to the last call
 * returned) and {@code ready <n>}, then {@code done} after SECONDS, then exits
 * without deregistering (the instances expire on the server).
 */
public final class Runner {
    private Runner() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: Runner SERVER_ADDR N SECONDS SERVICE_PREFIX");
            System.exit(2);
        }
        String server = args[0];
        int n = Integer.parseInt(args[1]);
        long seconds = Long.parseLong(args[2]);
        String peer = System.getProperty("peerbench.peer", "java");
        boolean batch = "batch".equals(System.getProperty("peerbench.register", "single"));
        String env = System.getenv("PEER_SERVICES");
        int services = env == null || env.isEmpty() ? 1 : Integer.parseInt(env);
        if (services < 1 || services > n) {
            throw new IllegalArgumentException("PEER_SERVICES must be in 1..N");
        }

        Properties props = new Properties();
        props.setProperty(PropertyKeyConst.SERVER_ADDR, server);
        props.setProperty(PropertyKeyConst.NAMESPACE, "public");
        NamingService naming = NamingFactory.createNamingService(props);

        long start = System.nanoTime();
        if (batch) {
            Method m = NamingService.class.getMethod(
                    "batchRegisterInstance", String.class, String.class, List.class);
            for (int k = 0; k < services; k++) {
                List<Instance> instances = new ArrayList<>();
                for (int i = k; i < n; i += services) {
                    Instance instance = new Instance();
                    instance.setIp(ip(i));
                    instance.setPort(port(i));
                    instance.setEphemeral(true);
                    instances.add(instance);
                }
                m.invoke(naming, service(args[3], peer, services, k), "DEFAULT_GROUP", instances);
            }
        } else {
            for (int i = 0; i < n; i++) {
                naming.registerInstance(service(args[3], peer, services, i % services), ip(i), port(i));
            }
        }
        System.out.println("registered_ms=" + (System.nanoTime() - start) / 1_000_000L);
        System.out.println("ready " + n);
        System.out.flush();

        Thread.sleep(seconds * 1000L);
        System.out.println("done");
        System.out.flush();
        // halt() skips the client's shutdown hooks: nothing needs cleaning up,
        // the ephemeral instances simply expire on the server.
        Runtime.getRuntime().halt(0);
    }

    static String service(String prefix, String peer, int services, int k) {
        return services == 1 ? prefix + "-" + peer : prefix + "-" + peer + "-" + k;
    }

    static String ip(int i) {
        return "10.255." + (i / 200) + "." + (i % 200 + 1);
    }

    static int port(int i) {
        return 20000 + i;
    }
}
