package peerbench.spring;

import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.springframework.beans.factory.ObjectProvider;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.cloud.client.ServiceInstance;
import org.springframework.cloud.client.loadbalancer.LoadBalanced;
import org.springframework.cloud.loadbalancer.cache.LoadBalancerCacheManager;
import org.springframework.cloud.loadbalancer.core.DelegatingServiceInstanceListSupplier;
import org.springframework.cloud.loadbalancer.core.ServiceInstanceListSupplier;
import org.springframework.cloud.loadbalancer.support.LoadBalancerClientFactory;
import org.springframework.http.ResponseEntity;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.RestController;
import org.springframework.web.client.RestTemplate;

/**
 * GET /call: one GET http://{target.service}/ through the @LoadBalanced
 * RestTemplate; 200 with the provider's body, or 502 with the error.
 * GET /instances: {"instances":["ip:port",...]}, the list the LoadBalancer
 * picks from right now (its cached ServiceInstanceListSupplier, not a fresh
 * Nacos query).
 * GET /lb: the supplier chain and the LoadBalancer cache manager in use.
 */
@RestController
class CallerController {

    private final RestTemplate restTemplate;
    private final LoadBalancerClientFactory lbFactory;
    private final ObjectProvider<LoadBalancerCacheManager> cacheManager;
    private final String service;

    CallerController(@LoadBalanced RestTemplate restTemplate,
                     LoadBalancerClientFactory lbFactory,
                     ObjectProvider<LoadBalancerCacheManager> cacheManager,
                     @Value("${target.service}") String service) {
        this.restTemplate = restTemplate;
        this.lbFactory = lbFactory;
        this.cacheManager = cacheManager;
        this.service = service;
    }

    @GetMapping("/call")
    ResponseEntity<String> call() {
        try {
            String body = restTemplate.getForObject("http://" + service + "/", String.class);
            return ResponseEntity.ok(body == null ? "" : body);
        } catch (Exception e) {
            return ResponseEntity.status(502).body(e.toString());
        }
    }

    @GetMapping("/instances")
    Map<String, List<String>> instances() {
        List<ServiceInstance> got = supplier().get().blockFirst(Duration.ofSeconds(5));
        List<String> out = new ArrayList<>();
        if (got != null) {
            for (ServiceInstance i : got) {
                out.add(i.getHost() + ":" + i.getPort());
            }
        }
        return Map.of("instances", out);
    }

    @GetMapping("/lb")
    Map<String, Object> lb() {
        List<String> chain = new ArrayList<>();
        ServiceInstanceListSupplier s = supplier();
        while (s != null) {
            chain.add(s.getClass().getName());
            s = s instanceof DelegatingServiceInstanceListSupplier d ? d.getDelegate() : null;
        }
        LoadBalancerCacheManager cm = cacheManager.getIfAvailable();
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("supplier_chain", chain);
        out.put("cache_manager", cm == null ? null : cm.getClass().getName());
        return out;
    }

    private ServiceInstanceListSupplier supplier() {
        return lbFactory.getInstance(service, ServiceInstanceListSupplier.class);
    }
}
