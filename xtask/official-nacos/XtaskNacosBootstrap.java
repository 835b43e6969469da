/*
 * Starts a Nacos 3.x server from its module jars, for xtask/src/official.rs.
 *
 * The official nacos-server.jar of 3.x runs com.alibaba.nacos.bootstrap.NacosBootstrap from
 * the nacos-bootstrap module, which is not on Maven Central. That class runs three Spring
 * Boot applications: a core context without a web server, the server's web context (main
 * port, context path /nacos) as its child, and, in the default "merged" deployment, the
 * console's web context (console port) as a second child. This class does the same with
 * the published nacos-server and nacos-console jars. `-Dnacos.deployment.type=server` leaves
 * the console out.
 */

import com.alibaba.nacos.NacosServerBasicApplication;
import com.alibaba.nacos.NacosServerWebApplication;
import com.alibaba.nacos.console.NacosConsole;
import com.alibaba.nacos.core.listener.startup.NacosStartUp;
import com.alibaba.nacos.core.listener.startup.NacosStartUpManager;
import com.alibaba.nacos.sys.env.DeploymentType;
import com.alibaba.nacos.sys.env.EnvUtil;
import org.springframework.boot.WebApplicationType;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.context.ConfigurableApplicationContext;

public final class XtaskNacosBootstrap {

    private XtaskNacosBootstrap() {
    }

    public static void main(String[] args) {
        DeploymentType type = DeploymentType.getType(System.getProperty("nacos.deployment.type", "merged"));
        if (type != DeploymentType.MERGED && type != DeploymentType.SERVER) {
            throw new IllegalArgumentException("deployment type must be merged or server, not " + type);
        }
        EnvUtil.setDeploymentType(type);

        NacosStartUpManager.start(NacosStartUp.CORE_START_UP_PHASE);
        ConfigurableApplicationContext core = new SpringApplicationBuilder(NacosServerBasicApplication.class)
                .web(WebApplicationType.NONE)
                .run(args);

        NacosStartUpManager.start(NacosStartUp.WEB_START_UP_PHASE);
        new SpringApplicationBuilder(NacosServerWebApplication.class).parent(core).run(args);

        if (type == DeploymentType.MERGED) {
            NacosStartUpManager.start(NacosStartUp.CONSOLE_START_UP_PHASE);
            new SpringApplicationBuilder(NacosConsole.class).parent(core).run(args);
        }
    }
}
