#!/bin/sh
# ovn-central: one member of the OVN Northbound and Southbound Raft clusters, and ovn-northd
# (every member runs one; they elect an active one through the NB database's lock).
#
# Environment:
#   POD_IP       this member's address (the downward API's status.podIP)
#   NODE_IPS     every member's address, comma-separated, the same list on every member. The
#                first one creates the clusters; the others join it. A member that already
#                has its databases (a restart) just starts them.
#   OVN_DB_DIR   where the database files live (default /etc/ovn: a hostPath in the manifest,
#                so a member restarted on its node keeps its Raft log)
#   ENABLE_SSL   true: clients (6641, 6642) and Raft (6643, 6644) speak SSL only, with the
#                certificates in OVN_TLS_DIR (default /var/run/tls: key, cert, cacert, as
#                Kube-OVN's kube-ovn-tls Secret); clients must present a certificate the CA
#                signed
#
# Ports (as Kube-OVN documents them): NB 6641, SB 6642 for clients; NB Raft 6643, SB Raft 6644.
# The process stays in the foreground while the three daemons live; it exits when one dies,
# so the kubelet restarts the member.
set -eu

: "${POD_IP:?set POD_IP to this member's address}"
: "${NODE_IPS:?set NODE_IPS to every member's address, comma-separated}"
DB_DIR=${OVN_DB_DIR:-/etc/ovn}
CTL=/usr/share/ovn/scripts/ovn-ctl
RUN_DIR=/var/run/ovn
LOG_DIR=/var/log/ovn
mkdir -p "$DB_DIR" "$RUN_DIR" "$LOG_DIR"

# An address as it goes into an OVSDB remote: IPv6 in brackets.
remote_addr() {
    case "$1" in
        *:*) echo "[$1]" ;;
        *) echo "$1" ;;
    esac
}

TLS_DIR=${OVN_TLS_DIR:-/var/run/tls}
case "${ENABLE_SSL:-false}" in
    true)
        PROTO=ssl
        for f in key cert cacert; do
            if [ ! -s "$TLS_DIR/$f" ]; then
                echo "ENABLE_SSL=true needs $TLS_DIR/$f (the kovn-ovn-tls Secret: kovn-install install --enable-ssl)" >&2
                exit 1
            fi
        done
        ;;
    false) PROTO=tcp ;;
    *)
        echo "ENABLE_SSL=$ENABLE_SSL: use true or false" >&2
        exit 2
        ;;
esac

# Every member's client remote for PORT: tcp:a:PORT,tcp:b:PORT,... (ssl: with ENABLE_SSL)
remotes() {
    list=""
    for ip in $(echo "$NODE_IPS" | tr ',' ' '); do
        list="$list${list:+,}$PROTO:$(remote_addr "$ip"):$1"
    done
    echo "$list"
}

first=${NODE_IPS%%,*}
set -- \
    --db-nb-file="$DB_DIR/ovnnb_db.db" --db-sb-file="$DB_DIR/ovnsb_db.db" \
    --db-nb-addr="$POD_IP" --db-sb-addr="$POD_IP" \
    --db-nb-cluster-local-addr="$(remote_addr "$POD_IP")" \
    --db-sb-cluster-local-addr="$(remote_addr "$POD_IP")" \
    --db-nb-cluster-local-proto="$PROTO" --db-sb-cluster-local-proto="$PROTO" \
    --ovn-northd-nb-db="$(remotes 6641)" --ovn-northd-sb-db="$(remotes 6642)"
if [ "$PROTO" = ssl ]; then
    # The client listeners come from the databases' Connection tables (set below).
    set -- "$@" \
        --db-nb-create-insecure-remote=no --db-sb-create-insecure-remote=no \
        --ovn-nb-db-ssl-key="$TLS_DIR/key" --ovn-nb-db-ssl-cert="$TLS_DIR/cert" \
        --ovn-nb-db-ssl-ca-cert="$TLS_DIR/cacert" \
        --ovn-sb-db-ssl-key="$TLS_DIR/key" --ovn-sb-db-ssl-cert="$TLS_DIR/cert" \
        --ovn-sb-db-ssl-ca-cert="$TLS_DIR/cacert" \
        --ovn-northd-ssl-key="$TLS_DIR/key" --ovn-northd-ssl-cert="$TLS_DIR/cert" \
        --ovn-northd-ssl-ca-cert="$TLS_DIR/cacert"
else
    set -- "$@" --db-nb-create-insecure-remote=yes --db-sb-create-insecure-remote=yes
fi
if [ "$POD_IP" != "$first" ] && [ ! -e "$DB_DIR/ovnnb_db.db" ]; then
    echo "joining the clusters of $first"
    set -- "$@" \
        --db-nb-cluster-remote-addr="$(remote_addr "$first")" \
        --db-sb-cluster-remote-addr="$(remote_addr "$first")" \
        --db-nb-cluster-remote-proto="$PROTO" --db-sb-cluster-remote-proto="$PROTO"
fi

stop() {
    "$CTL" stop_northd
    exit 0
}
trap stop TERM INT

"$CTL" "$@" start_northd
if [ "$PROTO" = ssl ]; then
    # SSL listeners for clients, on every member (the Connection rows are replicated; a
    # follower forwards the write to the leader). Retried until the cluster has a leader.
    for _ in $(seq 60); do
        ovn-nbctl --db="unix:$RUN_DIR/ovnnb_db.sock" --timeout=5 set-connection pssl:6641 &&
            ovn-sbctl --db="unix:$RUN_DIR/ovnsb_db.sock" --timeout=5 set-connection pssl:6642 &&
            break
        sleep 2
    done
fi
# The daemons log to files; the container's log is their sum.
tail -F -n +1 "$LOG_DIR"/ovsdb-server-nb.log "$LOG_DIR"/ovsdb-server-sb.log \
    "$LOG_DIR"/ovn-northd.log 2>/dev/null &

alive() {
    [ -s "$RUN_DIR/$1.pid" ] && kill -0 "$(cat "$RUN_DIR/$1.pid")" 2>/dev/null
}
while alive ovnnb_db && alive ovnsb_db && alive ovn-northd; do
    sleep 5 &
    wait $! || true
done
echo "an OVN daemon exited; stopping the member" >&2
"$CTL" stop_northd || true
exit 1
