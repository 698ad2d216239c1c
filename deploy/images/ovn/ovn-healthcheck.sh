#!/bin/sh
# Readiness of the ovn image's two roles, for the manifests' probes:
#   ovn-healthcheck.sh central   both databases are Raft members that know their leader
#   ovn-healthcheck.sh node      ovs-vswitchd answers and ovn-controller is connected to SB
set -eu

case "${1:-}" in
    central)
        for db in nb:OVN_Northbound sb:OVN_Southbound; do
            status=$(ovn-appctl -t "/var/run/ovn/ovn${db%%:*}_db.ctl" cluster/status "${db#*:}")
            if ! echo "$status" | grep -q '^Status: cluster member'; then
                echo "${db#*:}: not a cluster member yet" >&2
                exit 1
            fi
            if echo "$status" | grep -q '^Leader: unknown'; then
                echo "${db#*:}: no leader known" >&2
                exit 1
            fi
        done
        ;;
    node)
        ovs-appctl -t /var/run/openvswitch/ovs-vswitchd.ctl version >/dev/null
        state=$(ovn-appctl -t ovn-controller connection-status 2>/dev/null || true)
        if [ "$state" != connected ]; then
            echo "ovn-controller: ${state:-not answering}" >&2
            exit 1
        fi
        ;;
    *)
        echo "usage: $0 central|node" >&2
        exit 2
        ;;
esac
