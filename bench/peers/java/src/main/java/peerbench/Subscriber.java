package peerbench;

import com.alibaba.nacos.api.PropertyKeyConst;
import com.alibaba.nacos.api.naming.NamingFactory;
import com.alibaba.nacos.api.naming.NamingService;
import com.alibaba.nacos.api.naming.listener.NamingEvent;
import com.alibaba.nacos.api.naming.pojo.Instance;

import java.util.Properties;
import java.util.stream.Collectors;

/**
 * A Java caller: subscribes to a service through nacos-client's public API (server push
 * over gRPC on 2.x and 3.x) and prints the healthy instances' ports on every change.
 *
 * <p>Usage: {@code Subscriber SERVER_ADDR SERVICE SECONDS}. Prints {@code subscribed}, then
 * {@code hosts <port>,<port>...} (sorted, possibly empty) for each list the client gets,
 * and exits after SECONDS.
 */
public final class Subscriber {
    private Subscriber() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: Subscriber SERVER_ADDR SERVICE SECONDS");
            System.exit(2);
        }
        Properties props = new Properties();
        props.setProperty(PropertyKeyConst.SERVER_ADDR, args[0]);
        props.setProperty(PropertyKeyConst.NAMESPACE, "public");
        NamingService naming = NamingFactory.createNamingService(props);
        naming.subscribe(args[1], event -> {
            if (event instanceof NamingEvent) {
                String ports = ((NamingEvent) event).getInstances().stream()
                        .filter(Instance::isHealthy)
                        .map(i -> String.valueOf(i.getPort()))
                        .sorted()
                        .collect(Collectors.joining(","));
                System.out.println("hosts " + ports);
                System.out.flush();
            }
        });
        System.out.println("subscribed");
        System.out.flush();
        Thread.sleep(Long.parseLong(args[2]) * 1000L);
        Runtime.getRuntime().halt(0);
    }
}
