#!/bin/sh
# ovs-ovn: a node's Open vSwitch (ovsdb-server, ovs-vswitchd) and ovn-controller.
#
# kovn-agent writes the chassis settings ovn-controller waits for (ovn-remote, ovn-encap-type,
# ovn-encap-ip); this script only runs the daemons. The node's system-id is kept: an existing
# /etc/openvswitch/system-id.conf (Kube-OVN's, or an earlier run's) is used as it is, so a
# node keeps its chassis across restarts and a move from Kube-OVN.
#
# Environment:
#   OVS_DATAPATH_TYPE  system (the openvswitch kernel module; the default) or netdev (the
#                      userspace datapath, for hosts without the module)
#   OVS_DB_DIR         where conf.db lives (default /etc/openvswitch, a hostPath)
#   ENABLE_SSL         true: ovn-controller reaches the Southbound over SSL (the agent writes
#                      ssl: remotes) with the certificates in OVN_TLS_DIR (default
#                      /var/run/tls: key, cert, cacert), set as this node's SSL settings
set -eu

DATAPATH_TYPE=${OVS_DATAPATH_TYPE:-system}
DB_DIR=${OVS_DB_DIR:-/etc/openvswitch}
OVS_RUN=/var/run/openvswitch
OVS_LOG=/var/log/openvswitch
OVN_LOG=/var/log/ovn
mkdir -p "$DB_DIR" "$OVS_RUN" "$OVS_LOG" "$OVN_LOG" /var/run/ovn
DB="$DB_DIR/conf.db"
SCHEMA=/usr/share/openvswitch/vswitch.ovsschema

case "$DATAPATH_TYPE" in
    system | netdev) ;;
    *)
        echo "OVS_DATAPATH_TYPE=$DATAPATH_TYPE: use system or netdev" >&2
        exit 2
        ;;
esac

if [ ! -e "$DB" ]; then
    ovsdb-tool create "$DB" "$SCHEMA"
elif [ "$(ovsdb-tool needs-conversion "$DB" "$SCHEMA")" = yes ]; then
    echo "converting $DB to the schema of this Open vSwitch"
    ovsdb-tool convert "$DB" "$SCHEMA"
fi
ovsdb-server "$DB" --remote="punix:$OVS_RUN/db.sock" \
    --remote=db:Open_vSwitch,Open_vSwitch,manager_options \
    --pidfile="$OVS_RUN/ovsdb-server.pid" --unixctl="$OVS_RUN/ovsdb-server.ctl" \
    --log-file="$OVS_LOG/ovsdb-server.log" --detach
ovs-vsctl --no-wait init

id_file="$DB_DIR/system-id.conf"
if [ ! -s "$id_file" ]; then
    current=$(ovs-vsctl --no-wait get Open_vSwitch . external_ids:system-id 2>/dev/null | tr -d '"' || true)
    if [ -n "$current" ]; then
        echo "$current" >"$id_file"
    else
        cat /proc/sys/kernel/random/uuid >"$id_file"
    fi
fi
ovs-vsctl --no-wait set Open_vSwitch . external_ids:system-id="$(cat "$id_file")" \
    external_ids:ovn-bridge-datapath-type="$DATAPATH_TYPE"
if [ "$DATAPATH_TYPE" = netdev ]; then
    # Without it TCP through the userspace datapath fails (partial checksums).
    ovs-vsctl --no-wait set Open_vSwitch . other_config:userspace-tso-enable=true
else
    modprobe openvswitch 2>/dev/null || [ -d /sys/module/openvswitch ] || {
        echo "the openvswitch kernel module is not loaded and cannot be: load it, or set OVS_DATAPATH_TYPE=netdev" >&2
        exit 1
    }
fi
TLS_DIR=${OVN_TLS_DIR:-/var/run/tls}
if [ "${ENABLE_SSL:-false}" = true ]; then
    for f in key cert cacert; do
        if [ ! -s "$TLS_DIR/$f" ]; then
            echo "ENABLE_SSL=true needs $TLS_DIR/$f (the kovn-ovn-tls Secret)" >&2
            exit 1
        fi
    done
    # ovn-controller takes its certificates from the Open_vSwitch database's SSL row.
    ovs-vsctl --no-wait del-ssl || true
    ovs-vsctl --no-wait set-ssl "$TLS_DIR/key" "$TLS_DIR/cert" "$TLS_DIR/cacert"
fi
ovs-vswitchd --pidfile="$OVS_RUN/ovs-vswitchd.pid" --unixctl="$OVS_RUN/ovs-vswitchd.ctl" \
    --log-file="$OVS_LOG/ovs-vswitchd.log" --detach "unix:$OVS_RUN/db.sock"
ovs-vsctl --may-exist add-br br-int -- set Bridge br-int datapath_type="$DATAPATH_TYPE" \
    fail-mode=secure other_config:disable-in-band=true
OVS_RUNDIR=$OVS_RUN ovn-controller "unix:$OVS_RUN/db.sock" \
    --pidfile=/var/run/ovn/ovn-controller.pid --log-file="$OVN_LOG/ovn-controller.log" --detach

shutdown() {
    for pidfile in /var/run/ovn/ovn-controller.pid "$OVS_RUN/ovs-vswitchd.pid" "$OVS_RUN/ovsdb-server.pid"; do
        [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
}
trap 'shutdown; exit 0' TERM INT

tail -F -n +1 "$OVS_LOG/ovs-vswitchd.log" "$OVN_LOG/ovn-controller.log" 2>/dev/null &

alive() {
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}
while alive "$OVS_RUN/ovsdb-server.pid" && alive "$OVS_RUN/ovs-vswitchd.pid" &&
    alive /var/run/ovn/ovn-controller.pid; do
    sleep 5 &
    wait $! || true
done
echo "an Open vSwitch or OVN daemon exited; stopping" >&2
shutdown
exit 1
