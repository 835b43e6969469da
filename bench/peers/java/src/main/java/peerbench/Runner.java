package peerbench;

import com.alibaba.nacos.api.PropertyKeyConst;
import com.alibaba.nacos.api.naming.NamingFactory;
import com.alibaba.nacos.api.naming.NamingService;

import java.util.Properties;

/**
 * Peer runner: registers N ephemeral instances through nacos-client 1.4.x's
 * public API and lets its BeatReactor keep them alive for the given time.
 *
 * <p>Usage: {@code Runner SERVER_ADDR N SECONDS SERVICE_PREFIX}. Instances are
 * {@code 10.255.x.y:port} (never contacted), all in service
 * {@code <prefix>-java}. Prints {@code ready <n>} once every registerInstance
 * call has returned, then {@code done} after SECONDS, then exits without
 * deregistering (the instances expire on the server).
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
        String service = args[3] + "-java";

        Properties props = new Properties();
        props.setProperty(PropertyKeyConst.SERVER_ADDR, server);
        props.setProperty(PropertyKeyConst.NAMESPACE, "public");
        NamingService naming = NamingFactory.createNamingService(props);

        for (int i = 0; i < n; i++) {
            naming.registerInstance(service, ip(i), port(i));
        }
        System.out.println("ready " + n);
        System.out.flush();

        Thread.sleep(seconds * 1000L);
        System.out.println("done");
        System.out.flush();
        // halt() skips the client's shutdown hooks: nothing needs cleaning up,
        // the ephemeral instances simply expire on the server.
        Runtime.getRuntime().halt(0);
    }

    static String ip(int i) {
        return "10.255." + (i / 200) + "." + (i % 200 + 1);
    }

    static int port(int i) {
        return 20000 + i;
    }
}
