package peerbench;

import com.alibaba.nacos.api.PropertyKeyConst;
import com.alibaba.nacos.api.config.ConfigFactory;
import com.alibaba.nacos.api.config.ConfigService;
import com.alibaba.nacos.api.config.listener.Listener;

import java.util.Properties;
import java.util.concurrent.Executor;

/**
 * A Java app following a config through nacos-client's public API ({@code ConfigService},
 * gRPC on 2.x and 3.x), as Spring Cloud Alibaba's nacos-config does.
 *
 * <p>Usage: {@code ConfigListener SERVER_ADDR DATA_ID GROUP SECONDS}. Prints
 * {@code initial <content>}, then {@code changed <epoch ms> <content>} on every change the
 * client hands its listener (content with newlines escaped as {@code \n}), and exits after
 * SECONDS.
 */
public final class ConfigListener {
    private ConfigListener() {
    }

    private static String oneLine(String content) {
        return content == null ? "<none>" : content.replace("\n", "\\n");
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 4) {
            System.err.println("usage: ConfigListener SERVER_ADDR DATA_ID GROUP SECONDS");
            System.exit(2);
        }
        Properties props = new Properties();
        props.setProperty(PropertyKeyConst.SERVER_ADDR, args[0]);
        ConfigService configs = ConfigFactory.createConfigService(props);
        String initial = configs.getConfigAndSignListener(args[1], args[2], 5000, new Listener() {
            @Override
            public Executor getExecutor() {
                return null;
            }

            @Override
            public void receiveConfigInfo(String content) {
                System.out.println("changed " + System.currentTimeMillis() + " " + oneLine(content));
                System.out.flush();
            }
        });
        System.out.println("initial " + oneLine(initial));
        System.out.flush();
        Thread.sleep(Long.parseLong(args[3]) * 1000L);
        Runtime.getRuntime().halt(0);
    }
}
