#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, for the e2e tier (tests/e2e)
# and for trying daskflow on real pods without Docker or kind:
#
#   hack/cluster.sh up          start it (idempotent); the LAST line of stdout is the
#                               path of an admin kubeconfig, all progress goes to stderr
#   hack/cluster.sh load IMAGE  load a local docker image (or a `docker save` tarball)
#                               into the node's containerd
#   hack/cluster.sh down        stop everything `up` started and undo every host change
#                               (processes, mounts, iptables chains, routes, rules,
#                               bridge, sysctls); safe to call twice
#
# Components: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
# kube-proxy built from the pinned k8s.io/kubernetes (hack/build-testenv.sh), Debian's
# containerd + runc + CNI plugins (its own instance, socket and state, apart from
# Docker's), and CoreDNS built from its Go module (hack/cluster/) running as a pod.
#
# Networking keeps every packet on this machine: the bridge cni0 (10.244.0.1) is the
# node and API server address; the Service range is routed onto it; pods get no
# masquerading, and a policy-routing rule makes anything from the pod range that is not
# for a pod or a Service unreachable; CoreDNS has no `forward` plugin.
#
# Environment:
#   DASKFLOW_CACHE        build cache (default ~/.cache/daskflow)
#   DASKFLOW_CLUSTER_DIR  runtime state (default /run/daskflow-cluster; wiped by `down`)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KUBE_VERSION=v1.36.3
COREDNS_VERSION=v1.15.0
CACHE="${DASKFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/daskflow}"
KBIN="$CACHE/testenv/$KUBE_VERSION"
CBIN="$CACHE/cluster/$COREDNS_VERSION"
# containerd's content and snapshots outlive the cluster, as a cache of the loaded images:
# the next `load` of an unchanged image unpacks nothing. `down` deletes every container.
IMAGE_STORE="$CACHE/cluster/containerd"
DIR="${DASKFLOW_CLUSTER_DIR:-/run/daskflow-cluster}"
LOCK=/run/lock/daskflow-cluster.lock

NODE=daskflow-node
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SVC_CIDR=10.96.0.0/16
API_SVC_IP=10.96.0.1
DNS_IP=10.96.0.10
BRIDGE=cni0
RT_TABLE=30244 # policy-routing table and rule priority for the pod range
ETCD_PORT=23790
PAUSE_IMAGE=daskflow.local/pause:1
COREDNS_IMAGE=daskflow.local/coredns:$COREDNS_VERSION
# Started in this order, stopped in reverse.
COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
# Host settings the cluster (we, the bridge plugin, the kubelet, kube-proxy) may change;
# saved by `up` before anything starts and restored by `down`.
SYSCTLS=(
  net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
  net.ipv4.conf.all.route_localnet net.netfilter.nf_conntrack_max
  net.netfilter.nf_conntrack_tcp_timeout_established
  net.netfilter.nf_conntrack_tcp_timeout_close_wait
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes
)

# Host directories that the kubelet, containerd and the CNI plugins create whatever their
# configuration says; `down` removes those that did not exist before `up`.
HOST_DIRS=(/var/lib/cni /var/lib/kubelet /var/log/containers /var/log/pods /run/netns)

log() { echo "cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }
kubectl() { "$KBIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" "$@"; }
ctr() { command ctr --address "$DIR/containerd/containerd.sock" -n k8s.io "$@"; }
# Whether component $1 runs: its recorded PID is alive and still that program.
alive() {
  [[ -s "$DIR/pids/$1" ]] && grep -qsF -- "$1" "/proc/$(cat "$DIR/pids/$1")/cmdline"
}

# wait_for TIMEOUT COMMAND...: runs COMMAND once a second until it succeeds, for at most TIMEOUT seconds.
wait_for() {
  local timeout=$1 i
  shift
  for ((i = 0; i < timeout; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 1
  done
  return 1
}

# ---------------------------------------------------------------- what `up` needs

install_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v socat >/dev/null || missing+=(socat)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v openssl >/dev/null || missing+=(openssl)
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing ${missing[*]} from Debian"
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q)
  if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Release' -mmin -360 2>/dev/null | head -1)" ]]; then
    "${apt[@]}" update >&2
  fi
  # containerd's maintainer scripts must not start the packaged service.
  local prc=/usr/sbin/policy-rc.d created=0 rc=0
  if [[ ! -e $prc ]]; then printf '#!/bin/sh\nexit 101\n' >"$prc" && chmod 755 "$prc" && created=1; fi
  "${apt[@]}" install --no-install-recommends "${missing[@]}" >&2 || rc=$?
  [[ $created = 1 ]] && rm -f "$prc"
  return "$rc"
}

# A `docker save`-format tarball with one layer holding one static binary.
image_tar() {
  local name=$1 binary=$2 out=$3 t layer_sha config_sha
  t="$(mktemp -d)"
  mkdir "$t/root"
  cp "$binary" "$t/root/"
  tar --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$t/layer.tar" -C "$t/root" .
  layer_sha=$(sha256sum "$t/layer.tar" | cut -d' ' -f1)
  mkdir "$t/$layer_sha" && mv "$t/layer.tar" "$t/$layer_sha/layer.tar"
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/%s"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$(basename "$binary")" "$layer_sha" >"$t/config.json"
  config_sha=$(sha256sum "$t/config.json" | cut -d' ' -f1)
  mv "$t/config.json" "$t/$config_sha.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' \
    "$config_sha" "$name" "$layer_sha" >"$t/manifest.json"
  tar --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$out.tmp" -C "$t" manifest.json "$config_sha.json" "$layer_sha"
  mv "$out.tmp" "$out"
  rm -rf "$t"
}

build_images() {
  if [[ ! -s "$CBIN/coredns.tar" || ! -s "$CBIN/pause.tar" ]]; then
    if [[ ! -x "$CBIN/coredns" || ! -x "$CBIN/pause" ]]; then
      command -v go >/dev/null || die "Go is required to build CoreDNS and the pause program"
      log "building CoreDNS $COREDNS_VERSION and pause (one go build)"
      mkdir -p "$CBIN"
      local t=$SECONDS
      (cd "$HERE/cluster" && GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOFLAGS="${GOFLAGS:--mod=mod}" CGO_ENABLED=0 \
        go build -trimpath -ldflags='-s -w' -o "$CBIN/" ./coredns ./pause) >&2
      log "built in $((SECONDS - t))s"
    fi
    image_tar "$PAUSE_IMAGE" "$CBIN/pause" "$CBIN/pause.tar"
    image_tar "$COREDNS_IMAGE" "$CBIN/coredns" "$CBIN/coredns.tar"
  fi
}

# ------------------------------------------------------------------ certificates

# cert NAME CN [O] [SANS]: a key and a certificate signed by the cluster CA.
cert() {
  local name=$1 cn=$2 o=${3:-} sans=${4:-} subj="/CN=$2" ext
  [[ -n $o ]] && subj="/O=$o/CN=$cn"
  ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth"
  [[ -n $sans ]] && ext+=$'\n'"subjectAltName=$sans"
  openssl ecparam -name prime256v1 -genkey -noout -out "$DIR/pki/$name.key" 2>/dev/null
  openssl req -new -key "$DIR/pki/$name.key" -subj "$subj" -out "$DIR/pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$DIR/pki/$name.csr" -CA "$DIR/pki/ca.crt" -CAkey "$DIR/pki/ca.key" \
    -CAcreateserial -days 30 -extfile <(echo "$ext") -out "$DIR/pki/$name.crt" 2>/dev/null
  rm -f "$DIR/pki/$name.csr"
}

kubeconfig() { # kubeconfig NAME CERT
  local b64="base64 -w0"
  cat >"$DIR/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: daskflow
  cluster:
    server: https://$NODE_IP:6443
    certificate-authority-data: $($b64 "$DIR/pki/ca.crt")
users:
- name: $1
  user:
    client-certificate-data: $($b64 "$DIR/pki/$2.crt")
    client-key-data: $($b64 "$DIR/pki/$2.key")
contexts:
- name: daskflow
  context: {cluster: daskflow, user: $1}
current-context: daskflow
EOF
}

make_pki() {
  mkdir -p "$DIR/pki"
  openssl ecparam -name prime256v1 -genkey -noout -out "$DIR/pki/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$DIR/pki/ca.key" -subj /CN=daskflow-cluster-ca -days 30 \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out "$DIR/pki/ca.crt" 2>/dev/null
  cert apiserver kube-apiserver "" "IP:$NODE_IP,IP:$API_SVC_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert admin admin system:masters
  cert controller-manager system:kube-controller-manager
  cert scheduler system:kube-scheduler
  cert kube-proxy system:kube-proxy
  cert kubelet "system:node:$NODE" system:nodes "DNS:$NODE,IP:$NODE_IP"
  openssl ecparam -name prime256v1 -genkey -noout -out "$DIR/pki/sa.key" 2>/dev/null
  openssl ec -in "$DIR/pki/sa.key" -pubout -out "$DIR/pki/sa.pub" 2>/dev/null
  kubeconfig admin admin
  kubeconfig controller-manager controller-manager
  kubeconfig scheduler scheduler
  kubeconfig kube-proxy kube-proxy
  kubeconfig kubelet kubelet
}

# ------------------------------------------------------------------- host setup

write_configs() {
  mkdir -p "$DIR/cni/net.d" "$DIR/containerd" "$DIR/logs" "$DIR/pids" "$DIR/kubelet"
  cat >"$DIR/containerd/config.toml" <<EOF
version = 2
root = "$IMAGE_STORE"
state = "$DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$DIR/containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$DIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
EOF
  cat >"$DIR/cni/net.d/10-daskflow.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "daskflow", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "hairpinMode": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": "$DIR/cni/ipam",
            "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
  echo "nameserver $DNS_IP" >"$DIR/resolv.conf"
  cat >"$DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$DIR/containerd/containerd.sock
address: $NODE_IP
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
tlsCertFile: $DIR/pki/kubelet.crt
tlsPrivateKeyFile: $DIR/pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $DIR/pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$DNS_IP]
resolvConf: $DIR/resolv.conf
podLogsDir: $DIR/pod-logs
# Imported images cannot be pulled again: never collect them, never evict for disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
failSwapOn: false
EOF
  cat >"$DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: $POD_CIDR
mode: iptables
nodePortAddresses: [$POD_CIDR]
iptables: {localhostNodePorts: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

save_sysctls() {
  [[ -e "$DIR/sysctl.saved" ]] && return 0
  local k
  for k in "${SYSCTLS[@]}"; do
    sysctl -n "$k" >/dev/null 2>&1 && echo "$k=$(sysctl -n "$k")"
  done >"$DIR/sysctl.saved.tmp"
  mv "$DIR/sysctl.saved.tmp" "$DIR/sysctl.saved"
  local d
  for d in "${HOST_DIRS[@]}"; do
    [[ -e $d ]] || echo "$d"
  done >"$DIR/created-dirs"
}

setup_network() {
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr replace "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  ip route replace "$SVC_CIDR" dev "$BRIDGE" src "$NODE_IP"
  ip route replace "$POD_CIDR" dev "$BRIDGE" src "$NODE_IP" table "$RT_TABLE"
  ip route replace "$SVC_CIDR" dev "$BRIDGE" src "$NODE_IP" table "$RT_TABLE"
  ip route replace unreachable default table "$RT_TABLE"
  ip rule show priority "$RT_TABLE" | grep -q . ||
    ip rule add from "$POD_CIDR" lookup "$RT_TABLE" priority "$RT_TABLE"
  mountpoint -q "$DIR/etcd" || { mkdir -p "$DIR/etcd" && mount -t tmpfs -o size=512m daskflow-etcd "$DIR/etcd"; }
}

# ------------------------------------------------------------------- processes

start() { # start NAME ARGS...: in the background, PID recorded, log in $DIR/logs
  local name=$1
  shift
  alive "$name" && return 0
  setsid "$@" >>"$DIR/logs/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$DIR/pids/$name"
  log "started $name (pid $!)"
}

start_all() {
  start containerd containerd --config "$DIR/containerd/config.toml"
  wait_for 30 ctr version || die "containerd did not answer; see $DIR/logs/containerd.log"
  local img
  for img in pause coredns; do
    ctr images import "$CBIN/$img.tar" >&2
  done
  start etcd "$KBIN/etcd" --name default --data-dir "$DIR/etcd/data" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
    --initial-cluster "default=http://127.0.0.1:$((ETCD_PORT + 10))"
  local p=$DIR/pki
  start kube-apiserver "$KBIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port 6443 \
    --service-cluster-ip-range "$SVC_CIDR" --allow-privileged \
    --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" --client-ca-file "$p/ca.crt" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --kubelet-client-certificate "$p/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$p/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$p/ca.crt" --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key"
  wait_for 90 kubectl get --raw /readyz || die "kube-apiserver not ready; see $DIR/logs/kube-apiserver.log"
  start kube-controller-manager "$KBIN/kube-controller-manager" --kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$DIR/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
    --cluster-signing-cert-file "$p/ca.crt" --cluster-signing-key-file "$p/ca.key" \
    --service-cluster-ip-range "$SVC_CIDR"
  start kube-scheduler "$KBIN/kube-scheduler" --kubeconfig "$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig "$DIR/scheduler.kubeconfig" --authorization-kubeconfig "$DIR/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false
  start kubelet "$KBIN/kubelet" --config "$DIR/kubelet.yaml" --kubeconfig "$DIR/kubelet.kubeconfig" \
    --hostname-override "$NODE" --node-ip "$NODE_IP" --root-dir "$DIR/kubelet"
  start kube-proxy "$KBIN/kube-proxy" --config "$DIR/kube-proxy.yaml"
}

# A DNS query for kubernetes.default.svc.cluster.local sent to the cluster DNS Service IP
# from the host: proves kube-proxy's rules, the Service route and CoreDNS together.
dns_answers() {
  python3 - "$DNS_IP" <<'EOF'
import socket, struct, sys
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in "kubernetes.default.svc.cluster.local".split(".")) + b"\0"
q += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(q, (sys.argv[1], 53))
r = s.recv(512)
sys.exit(0 if r[:2] == q[:2] and r[3] & 0xF == 0 and struct.unpack(">H", r[6:8])[0] > 0 else 1)
EOF
}

deploy_dns() {
  sed -e "s|@COREDNS_IMAGE@|$COREDNS_IMAGE|" -e "s|@DNS_IP@|$DNS_IP|" "$HERE/cluster/coredns.yaml" |
    kubectl apply -f - >&2
}

cmd_up() {
  local t0=$SECONDS c
  install_packages
  [[ -x "$KBIN/kubelet" && -x "$KBIN/etcd" ]] || bash "$HERE/build-testenv.sh" >&2
  build_images
  # A cluster that is partly up (a process died, or the machine rebooted) starts over.
  for c in "${COMPONENTS[@]}"; do
    if [[ -e "$DIR/pids/$c" ]] && ! alive "$c"; then
      log "$c is not running any more: starting over"
      cmd_down
      break
    fi
  done
  if ! alive kube-proxy; then
    mkdir -p "$DIR"
    save_sysctls
    [[ -s "$DIR/admin.kubeconfig" ]] || make_pki
    write_configs
    setup_network
    start_all
  fi
  wait_for 120 kubectl get node "$NODE" || die "node $NODE did not register; see $DIR/logs/kubelet.log"
  kubectl wait --for=condition=Ready "node/$NODE" --timeout=120s >&2 ||
    die "node $NODE not Ready; see $DIR/logs/kubelet.log"
  log "node Ready after $((SECONDS - t0))s"
  deploy_dns
  kubectl -n kube-system rollout status deploy/coredns --timeout=180s >&2 ||
    die "CoreDNS not ready; see kubectl -n kube-system describe pod -l k8s-app=kube-dns"
  wait_for 60 dns_answers || die "the cluster DNS ($DNS_IP) does not answer"
  log "DNS Ready after $((SECONDS - t0))s"
  echo "$DIR/admin.kubeconfig"
}

# The name containerd stores docker image $1 under: x:t is docker.io/library/x:t.
containerd_ref() {
  local ref=$1 first=${1%%/*}
  if [[ $ref != */* ]]; then
    ref=docker.io/library/$ref
  elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then
    ref=docker.io/$ref
  fi
  [[ ${ref##*/} = *[:@]* ]] || ref=$ref:latest
  echo "$ref"
}

# The config digest (what docker calls the image ID) of image $1 in the node, if any.
loaded_id() {
  local manifest
  manifest=$(ctr images ls "name==$1" | awk 'NR == 2 {print $3}')
  [[ -n $manifest ]] || return 0
  ctr content get "$manifest" | grep -o '"config":{[^}]*}' | grep -o 'sha256:[0-9a-f]*' || true
}

cmd_load() {
  local image=${1:?usage: hack/cluster.sh load IMAGE|TARBALL} id
  alive containerd || die "the cluster is not up (hack/cluster.sh up)"
  if [[ -f $image ]]; then
    ctr images import "$image" >&2
  else
    id=$(docker image inspect -f '{{.Id}}' "$image") || die "no local docker image $image"
    if [[ "$(loaded_id "$(containerd_ref "$image")")" = "$id" ]]; then
      log "$image ($id) is already loaded"
      return 0
    fi
    docker save "$image" | ctr images import - >&2
  fi
  log "loaded $image"
}

# --------------------------------------------------------------------- teardown

stop() { # stop NAME: SIGTERM to its recorded PID, SIGKILL after 20 s
  local pid i
  [[ -s "$DIR/pids/$1" ]] || return 0
  pid=$(cat "$DIR/pids/$1")
  if alive "$1"; then
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { log "$1 (pid $pid) ignored SIGTERM; killing it"; kill -9 "$pid" 2>/dev/null || true; }
    log "stopped $1 (pid $pid)"
  fi
  rm -f "$DIR/pids/$1"
}

no_tasks() { [[ -z "$(ctr tasks ls -q)" ]]; }

# Deletes every pod while the kubelet still runs, so that it stops them and calls CNI
# DEL for each sandbox. The scheduler and controller manager go first: nothing is
# recreated or scheduled meanwhile.
delete_workloads() {
  alive kubelet && alive kube-apiserver && alive containerd || return 0
  stop kube-controller-manager
  stop kube-scheduler
  kubectl delete pods --all --all-namespaces --grace-period=2 --wait=false >&2 2>/dev/null || true
  if ! wait_for 90 no_tasks; then
    log "containers still running after 90s: $(ctr tasks ls -q | tr '\n' ' ')"
  fi
}

# Removes every iptables chain named KUBE-* or CNI-* (kube-proxy's and portmap's), with
# the rules of other chains that jump to them.
remove_chains() {
  local ipt table chains c
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for table in filter nat mangle raw; do
      chains=$("$ipt" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^(KUBE-|CNI-)/ {print $2}')
      [[ -z $chains ]] && continue
      "$ipt" -t "$table" -S | awk '$1 == "-A" && $2 !~ /^(KUBE-|CNI-)/ && / -j (KUBE-|CNI-)/' |
        sed 's/^-A/-D/' | while read -r rule; do eval "$ipt -t $table $rule" || true; done
      for c in $chains; do "$ipt" -t "$table" -F "$c" 2>/dev/null || true; done
      for c in $chains; do "$ipt" -t "$table" -X "$c" 2>/dev/null || true; done
    done
  done
}

cmd_down() {
  local t0=$SECONDS i c pid m d
  [[ -d $DIR ]] || { log "nothing to stop"; return 0; }
  delete_workloads
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c=${COMPONENTS[i]}
    [[ $c = containerd ]] && continue # after the chains: the shims need it to exit cleanly
    stop "$c"
  done
  [[ -x "$KBIN/kube-proxy" ]] && "$KBIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  remove_chains
  # Every container goes (with its task, if one would not stop); the images stay.
  if alive containerd; then
    for c in $(ctr containers ls -q 2>/dev/null); do
      ctr tasks delete --force "$c" >/dev/null 2>&1 || true
      ctr containers rm "$c" >/dev/null 2>&1 || true
    done
  fi
  stop containerd
  rm -rf "$IMAGE_STORE/io.containerd.grpc.v1.cri" # the CRI's per-sandbox files
  # containerd's shims outlive it; each names our socket on its command line.
  for pid in $(grep -lsF -- "$DIR/containerd/containerd.sock" /proc/[0-9]*/cmdline | cut -d/ -f3); do
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" = containerd-shim* ]] || continue
    log "stopping leftover shim (pid $pid)"
    kill -9 "$pid" 2>/dev/null || true
  done
  # Mounts under our directory (container root filesystems, pod volumes, etcd's tmpfs),
  # deepest first, and network namespaces left by sandboxes that were never torn down.
  for m in $(awk -v d="$DIR/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  while ip rule del priority "$RT_TABLE" 2>/dev/null; do :; done
  ip route flush table "$RT_TABLE" 2>/dev/null || true
  ip route del "$SVC_CIDR" 2>/dev/null || true
  # The kubelet's cgroups (cgroupfs driver): every hierarchy has a kubepods tree.
  for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d $c ]] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  if [[ -s "$DIR/sysctl.saved" ]]; then
    while IFS= read -r kv; do sysctl -qw "$kv" 2>/dev/null || log "could not restore $kv"; done <"$DIR/sysctl.saved"
  fi
  find /var/log/containers -maxdepth 1 -lname "$DIR/*" -delete 2>/dev/null || true
  if [[ -s "$DIR/created-dirs" ]]; then
    while IFS= read -r d; do rm -rf "$d"; done <"$DIR/created-dirs"
  fi
  # Keep the logs of the last cluster for post-mortems; everything else goes.
  if [[ -d "$DIR/logs" ]]; then
    rm -rf "$CACHE/cluster/last-logs" && mkdir -p "$CACHE/cluster" && mv "$DIR/logs" "$CACHE/cluster/last-logs"
  fi
  rm -rf "$DIR"
  log "down in $((SECONDS - t0))s (logs of this cluster: $CACHE/cluster/last-logs)"
}

main() {
  [[ $(id -u) = 0 ]] || die "needs root (containerd, the kubelet and the network setup)"
  mkdir -p "$(dirname "$LOCK")"
  exec 9>"$LOCK"
  flock 9
  case "${1:-}" in
    up) cmd_up ;;
    load) cmd_load "${2:-}" ;;
    down) cmd_down ;;
    *) echo "usage: hack/cluster.sh up|load IMAGE|down" >&2; exit 2 ;;
  esac
}

[[ "${BASH_SOURCE[0]}" != "$0" ]] || main "$@"
