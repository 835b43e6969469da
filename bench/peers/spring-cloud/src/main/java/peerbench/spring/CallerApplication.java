package peerbench.spring;

import java.time.Duration;

import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.web.context.WebServerInitializedEvent;
import org.springframework.cloud.client.loadbalancer.LoadBalanced;
import org.springframework.context.ApplicationListener;
import org.springframework.context.annotation.Bean;
import org.springframework.http.client.SimpleClientHttpRequestFactory;
import org.springframework.web.client.RestTemplate;

/**
 * A Spring Cloud caller at its defaults, for the rolling-restart harness:
 * Nacos discovery (Spring Cloud Alibaba) and a plain {@code @LoadBalanced
 * RestTemplate} (no retry) over the Spring Cloud LoadBalancer's defaults.
 * Prints {@code listening on <address>:<port>} once the web server is up.
 */
@SpringBootApplication
public class CallerApplication implements ApplicationListener<WebServerInitializedEvent> {

    public static void main(String[] args) {
        SpringApplication.run(CallerApplication.class, args);
    }

    @Value("${server.address:127.0.0.1}")
    private String address;

    @Bean
    @LoadBalanced
    RestTemplate restTemplate() {
        SimpleClientHttpRequestFactory factory = new SimpleClientHttpRequestFactory();
        factory.setConnectTimeout(Duration.ofSeconds(2));
        factory.setReadTimeout(Duration.ofSeconds(10));
        return new RestTemplate(factory);
    }

    @Override
    public void onApplicationEvent(WebServerInitializedEvent event) {
        System.out.println("listening on " + address + ":" + event.getWebServer().getPort());
        System.out.flush();
    }
}
