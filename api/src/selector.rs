//! Label selectors, evaluated one way everywhere (NetworkPolicies in the controller, a
//! ProviderNetwork's `nodeSelector` in the agent).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` match `selector` (matchLabels and matchExpressions, all ANDed). An
/// operator kovn does not know selects nothing (the API server validates them, so this is a
/// malformed object, which must never widen a policy).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(wanted) = &selector.match_labels
        && wanted.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    })
}
