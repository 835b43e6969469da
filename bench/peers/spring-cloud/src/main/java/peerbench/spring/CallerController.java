package peerbench.spring;

import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.springframework.beans.factory.annotation.Value;
import org.springframework.cloud.client.ServiceInstance;
import org.springframework.cloud.client.loadbalancer.LoadBalanced;
import org.springframework.cloud.context.named.NamedContextFactory;
import org.springframework.cloud.loadbalancer.cache.LoadBalancerCacheManager;
import org.springframework.cloud.loadbalancer.core.DelegatingServiceInstanceListSupplier;
import org.springframework.cloud.loadbalancer.core.ServiceInstanceListSupplier;
import org.springframework.cloud.loadbalancer.support.LoadBalancerClientFactory;
import org.springframework.context.support.GenericApplicationContext;
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
 * GET /lb: the supplier chain, the LoadBalancer cache manager and the
 * configuration that defined the supplier (diagnostics only).
 */
@RestController
class CallerController {

    private final RestTemplate restTemplate;
    private final LoadBalancerClientFactory lbFactory;
    private final String service;

    CallerController(@LoadBalanced RestTemplate restTemplate,
                     LoadBalancerClientFactory lbFactory,
                     @Value("${target.service}") String service) {
        this.restTemplate = restTemplate;
        this.lbFactory = lbFactory;
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
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("supplier_chain", chain);
        // Registered with autowireCandidate=false, so not injectable; resolved
        // here as the supplier builder resolves it (in the service's LB context).
        LoadBalancerCacheManager cm = lbFactory.getInstance(service, LoadBalancerCacheManager.class);
        out.put("cache_manager", cm == null ? null : cm.getClass().getName());
        out.put("supplier_defined_by", supplierDefinedBy());
        return out;
    }

    /** The configuration class and method that defined the supplier bean (reactive or blocking discovery). */
    private List<String> supplierDefinedBy() {
        List<String> out = new ArrayList<>();
        try {
            var getContext = NamedContextFactory.class.getDeclaredMethod("getContext", String.class);
            getContext.setAccessible(true);
            GenericApplicationContext ctx = (GenericApplicationContext) getContext.invoke(lbFactory, service);
            for (String name : ctx.getBeanNamesForType(ServiceInstanceListSupplier.class)) {
                var def = ctx.getBeanDefinition(name);
                out.add(name + " <- " + def.getFactoryBeanName() + "#" + def.getFactoryMethodName());
            }
        } catch (Exception e) {
            out.add(e.toString());
        }
        return out;
    }

    private ServiceInstanceListSupplier supplier() {
        return lbFactory.getInstance(service, ServiceInstanceListSupplier.class);
    }
}
