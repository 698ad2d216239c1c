//! Synthetic Kubernetes objects for the benchmarks.

use serde_json::json;

/// `services` synthetic Services × 10 endpoints as the API holds them (Service + EndpointSlice).
pub fn put_services(api: &sandbox::kube_api::FakeApi, services: usize) -> anyhow::Result<()> {
    for (name, vip) in agent::services::synthetic_vips(services, 10) {
        let short = name.trim_start_matches("default/");
        let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
            "metadata": {"name": short, "namespace": "default"},
            "spec": {"clusterIP": vip.ip.to_string(), "clusterIPs": [vip.ip.to_string()],
                     "ports": [{"name": "http", "port": vip.port, "protocol": "TCP",
                                "targetPort": 8080}]}
        }))?;
        let endpoints: Vec<_> = vip
            .backends
            .iter()
            .map(|b| json!({"addresses": [b.ip().to_string()], "conditions": {"ready": true}}))
            .collect();
        let slice: k8s_openapi::api::discovery::v1::EndpointSlice =
            serde_json::from_value(json!({
                "metadata": {"name": format!("{short}-1"), "namespace": "default",
                             "labels": {"kubernetes.io/service-name": short}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": endpoints
            }))?;
        api.put(&service);
        api.put(&slice);
    }
    Ok(())
}
