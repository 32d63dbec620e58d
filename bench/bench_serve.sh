#!/usr/bin/env bash
# Throughput of `stirshaken serve` next to secsipidx / Kamailio+secsipid, same machine, same run.
#
#   REST  wrk -t$WRK_T -c$WRK_C -d${DUR}s POST /stir/v1/signing and /stir/v1/verification
#         (ATIS-1000082 bodies) against `stirshaken serve` (http_engine aiohttp and fast,
#         $WORKERS workers), and POST /v1/sign-csv against `secsipidx -http-srv`.
#         Pass rule: no socket error, no non-2xx, and every sampled response is a 200 of the
#         expected shape.
#   SIP   sipp uac_redirect_load.xml (INVITE / 302 / ACK, -buff_size 4194304) at each rate of
#         $SIP_RATES for ${DUR}s against our SIP signing service and against Kamailio +
#         secsipid (peers/kamailio/as-redirect.cfg, $KAM_CHILDREN children).  A rate passes
#         when every call succeeded with no retransmission.
#   SIPV  sipp uac_verify_load.xml (INVITE with a fresh, distinct Identity and its Date / 302 /
#         ACK) at each rate of $SIP_VRATES against our SIP verification service (warm
#         certificate cache, replay detection on) and against Kamailio + secsipid_check_identity
#         (peers/kamailio/vs-redirect.cfg, warm x5u cache).  Same pass rule.  The Identity
#         headers are signed just before each rate (bench/make_identities.py).
#
# Usage (from the project root; loopback only, every process started here is stopped by PID):
#   bench/bench_serve.sh                       # everything (~4 min)
#   PARTS=rest bench/bench_serve.sh            # only REST;  PARTS=sip: only SIP signing; PARTS=sipv: only SIP verification
#   DUR=10 WORKERS=2 WRK_T=2 WRK_C=32 SIP_RATES="2000 5000 8000 10000 12000" bench/bench_serve.sh
# Not a test: numbers depend on the machine (2 vCPU here, shared by the load generator).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$ROOT/tests/peers}
PY=$ROOT/.venv/bin/python
DUR=${DUR:-10}
WORKERS=${WORKERS:-2}
WRK_T=${WRK_T:-2}
WRK_C=${WRK_C:-32}
PARTS=${PARTS:-"rest sip sipv"}
ENGINES=${ENGINES:-"aiohttp fast"}
SIP_RATES=${SIP_RATES:-"2000 5000 8000 10000 12000 15000"}
SIP_VRATES=${SIP_VRATES:-"500 1000 2000 3000 4000 5000 6000 8000"}
KAM_CHILDREN=${KAM_CHILDREN:-2}
BASE=${PORT_BASE:-21500}
X5U_PORT=$BASE API=$((BASE+1)) SECSIPID=$((BASE+2)) SIP=$((BASE+3)) KAM=15070 SIPP_PORT=$((BASE+5)) SIPV=$((BASE+6)) KAMV=15071
ORIG=12155551212 DEST=12155551213
W=$(mktemp -d /tmp/bench_serve.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 50); do
    local alive=0; for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for t in wrk sipp secsipidx kamailio; do command -v $t >/dev/null || { echo "missing $t (peers/install.sh)"; exit 2; }; done
wait_tcp() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
stop_pid() { kill -TERM "$1" 2>/dev/null; for _ in $(seq 80); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done; kill -KILL "$1" 2>/dev/null; }

HTTP_PORT=$X5U_PORT "$PEERS/mkpki.sh" "$W/pki" >/dev/null 2>&1 || { echo "mkpki failed"; exit 2; }
X5U="http://127.0.0.1:$X5U_PORT/sp-chain.pem"
python3 -m http.server $X5U_PORT --bind 127.0.0.1 --directory "$W/pki/pub" >/dev/null 2>&1 & PIDS+=($!)
wait_tcp $X5U_PORT || { echo "x5u server did not start"; exit 2; }

start_serve() {   # engine -> echoes pid
  cat > "$W/serve-$1.toml" <<TOML
[server]
http = "127.0.0.1:$API"
sip_signing = "127.0.0.1:$SIP"
sip_verification = "127.0.0.1:$SIPV"
workers = $WORKERS
http_engine = "$1"
log_level = "WARNING"
[signing]
key = "$W/pki/sp.key"
x5u = "$X5U"
allow_http_x5u = true      # the bench's x5u server is http on loopback
allow_private_x5u = true
[verification]
trust_anchors = ["$W/pki/ca-root.pem"]
allow_http_x5u = true
allow_private_x5u = true
replay_detection = true    # the node's replay table (no Redis): Kamailio+secsipid has none
TOML
  "$PY" -m stirshaken.serve --config "$W/serve-$1.toml" > "$W/serve-$1.log" 2>&1 &
  local pid=$!
  wait_tcp $API || { echo "serve did not start: $(tail -n 3 "$W/serve-$1.log")" >&2; }
  sleep 0.5
  echo $pid
}

wrk_post() {   # label url body-file [ok-regex]
  local label=$1 url=$2 body=$3 f
  f=$(echo "$1" | tr ' /[]' '____')
  cat > "$W/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "${CTYPE:-application/json}"
wrk.headers["Accept"] = "application/json"
local f = io.open("$body", "rb"); wrk.body = f:read("*a"); f:close()
LUA
  wrk -t"$WRK_T" -c"$WRK_C" -d2s -s "$W/post.lua" "$url" >/dev/null 2>&1     # warm-up (x5u cache, JIT-less but caches)
  wrk -t"$WRK_T" -c"$WRK_C" -d"${DUR}s" --latency -s "$W/post.lua" "$url" > "$W/wrk-$f.txt" 2>&1
  local rps p99 errs
  rps=$(awk '/Requests\/sec/{print $2}' "$W/wrk-$f.txt")
  p99=$(awk '$1=="99%"{print $2}' "$W/wrk-$f.txt")
  errs=$(awk '/Non-2xx|Socket errors/{sub(/^ +/,""); printf "%s; ", $0}' "$W/wrk-$f.txt")
  printf '%-34s %10s req/s  p99 %-8s %s\n' "$label" "$rps" "$p99" "${errs:-no errors}"
  echo "$rps" > "$W/rps-$f"
}

if [[ " $PARTS " == *" rest "* ]]; then
  echo "== REST (wrk -t$WRK_T -c$WRK_C, ${DUR}s, $(nproc) CPUs shared with wrk; stirshaken workers=$WORKERS)"
  secsipidx -http-srv 127.0.0.1:$SECSIPID -fprvkey "$W/pki/sp.key" -expire 60 -timeout 3 -x5u "$X5U" > "$W/secsipidx.log" 2>&1 &
  SPID=$!; PIDS+=($SPID)
  wait_tcp $SECSIPID || echo "secsipidx did not start"
  printf '%s,%s,A,,%s' $ORIG $DEST "$X5U" > "$W/csv.txt"
  curl -s --data-binary @"$W/csv.txt" "http://127.0.0.1:$SECSIPID/v1/sign-csv" | grep -q ';info=' || echo "secsipidx sample sign failed"
  CTYPE=text/plain wrk_post "secsipidx /v1/sign-csv" "http://127.0.0.1:$SECSIPID/v1/sign-csv" "$W/csv.txt"
  stop_pid $SPID
  for e in $ENGINES; do
    pid=$(start_serve "$e"); PIDS+=($pid)
    now=$(date +%s)
    printf '{"signingRequest":{"attest":"A","dest":{"tn":["%s"]},"iat":%s,"orig":{"tn":"%s"},"origid":"123e4567-e89b-12d3-a456-426614174000"}}' \
      $DEST $now $ORIG > "$W/sign.json"
    curl -s -H 'Content-Type: application/json' --data-binary @"$W/sign.json" "http://127.0.0.1:$API/stir/v1/signing" > "$W/sample.json"
    grep -q '"identity":"ey' "$W/sample.json" || echo "sample signing failed: $(cat "$W/sample.json")"
    wrk_post "stirshaken[$e] signing" "http://127.0.0.1:$API/stir/v1/signing" "$W/sign.json"
    # verification: sign a fresh Identity now (iat and time must be within 60 s during the run)
    now=$(date +%s)
    printf '{"signingRequest":{"attest":"A","dest":{"tn":["%s"]},"iat":%s,"orig":{"tn":"%s"}}}' $DEST $now $ORIG > "$W/sign2.json"
    id=$(curl -s -H 'Content-Type: application/json' --data-binary @"$W/sign2.json" "http://127.0.0.1:$API/stir/v1/signing" |
         python3 -c 'import json,sys; print(json.load(sys.stdin)["signingResponse"]["identity"])')
    python3 -c 'import json,sys; print(json.dumps({"verificationRequest":{"from":{"tn":sys.argv[1]},"to":{"tn":[sys.argv[2]]},"time":int(sys.argv[3]),"identity":sys.argv[4]}}))' \
      $ORIG $DEST $now "$id" > "$W/verify.json"
    curl -s -H 'Content-Type: application/json' --data-binary @"$W/verify.json" "http://127.0.0.1:$API/stir/v1/verification" |
      grep -q 'TN-Validation-Passed' || echo "sample verification did not pass"
    wrk_post "stirshaken[$e] verification" "http://127.0.0.1:$API/stir/v1/verification" "$W/verify.json"
    curl -s "http://127.0.0.1:$API/metrics" | grep -E '^stirshaken_(verified|signed)_total' | sed 's/^/    /'
    stop_pid $pid
  done
  base=$(cat "$W/rps-secsipidx__v1_sign-csv" 2>/dev/null || echo 0)
  for e in $ENGINES; do
    r=$(cat "$W/rps-stirshaken_${e}__signing" 2>/dev/null || echo 0)
    python3 -c "import sys; b,r=float(sys.argv[1] or 0),float(sys.argv[2] or 0); print(f'signing ratio stirshaken[{sys.argv[3]}] / secsipidx = {r/b:.2f}x' if b else 'no secsipidx figure')" "$base" "$r" "$e"
  done
fi

tree_cpu() {   # pid -> CPU seconds (user + system) of that process and all its descendants, alive now
  python3 - "$1" <<'EOF'
import os, sys
tick = os.sysconf("SC_CLK_TCK"); parent = {}; cpu = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d)] = int(f[1]); cpu[int(d)] = (int(f[11]) + int(f[12])) / tick
root = int(sys.argv[1]); total = 0.0
for p in cpu:
    q = p
    while q > 1 and q != root:
        q = parent.get(q, 0)
    if q == root:
        total += cpu[p]
print(f"{total:.2f}")
EOF
}

sipp_rate() {   # label port rate [scenario [extra sipp args...]] -> prints one line, returns 0 if clean
  # with CPU_ROOT set to the server's pid, the line also gives the server's CPU per call (all its
  # processes) and sipp's CPU (user + system seconds): what the same rate costs on each side
  local label=$1 port=$2 r=$3 scen=${4:-$PEERS/sipp/uac_redirect_load.xml} d
  d="$W/sipp-$(echo "$1" | tr ' /()=+' '______')-$3"
  shift 4 2>/dev/null || shift $#
  mkdir -p "$d"
  local c0=0; [ -n "${CPU_ROOT:-}" ] && c0=$(tree_cpu "$CPU_ROOT")
  ( cd "$d" && timeout $((DUR * 3 + 30)) sipp 127.0.0.1:$port -sf "$scen" -i 127.0.0.1 -p $SIPP_PORT "$@" \
      -nostdin -r "$r" -m $((r * DUR)) -l 20000 -timeout $((DUR * 3 + 20))s -timeout_error -max_retrans 3 \
      -buff_size 4194304 -key orig_tn $ORIG -key dest_tn $DEST -trace_stat -stf stat.csv -fd 600 > sipp.out 2>&1; echo $? > rc; times > times )
  local last; last=$(tail -n 1 "$d/stat.csv" 2>/dev/null)
  local ok failed retrans elapsed
  read -r ok failed retrans elapsed < <(python3 - "$d/stat.csv" <<'EOF'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=";"))
h, last = rows[0], rows[-1]
g = lambda n: last[h.index(n)]
el = g("ElapsedTime(C)")
hh, mm, ss = el.split(":"); secs = int(hh) * 3600 + int(mm) * 60 + float(ss.split(":")[0])
print(g("SuccessfulCall(C)"), g("FailedCall(C)"), g("Retransmissions(C)"), f"{secs:.1f}")
EOF
  )
  local verdict=FAIL
  [ "$(cat "$d/rc")" = 0 ] && [ "${failed:-1}" = 0 ] && [ "${retrans:-1}" = 0 ] && [ "${ok:-0}" = $((r * DUR)) ] && verdict=pass
  local cpu=""
  if [ -n "${CPU_ROOT:-}" ]; then
    cpu=$(python3 -c 'import sys,re; c0,c1,n=float(sys.argv[1]),float(sys.argv[2]),int(sys.argv[3] or 0); t=open(sys.argv[4]).read().split("\n")[1]; s=sum(int(m)*60+float(x) for m,x in re.findall(r"(\d+)m([0-9.]+)s", t)); print(f"server {1e6*(c1-c0)/n:5.0f} us CPU/call, sipp {s:5.1f} s CPU" if n else "")' \
      "$c0" "$(tree_cpu "$CPU_ROOT")" "${ok:-0}" "$d/times" 2>/dev/null)
  fi
  printf '%-28s rate %6s  ok %7s  failed %5s  retrans %5s  elapsed %6ss  %s  %s\n' "$label" "$r" "${ok:-?}" "${failed:-?}" "${retrans:-?}" "${elapsed:-?}" $verdict "$cpu"
  [ $verdict = pass ]
}

if [[ " $PARTS " == *" sip "* ]]; then
  echo "== SIP signing, redirect model (sipp uac_redirect_load.xml, ${DUR}s per rate; rates stop at the first failure)"
  pid=$(start_serve fast); PIDS+=($pid); CPU_ROOT=$pid
  for r in $SIP_RATES; do sipp_rate "stirshaken sip_signing" $SIP "$r" || break; done
  stop_pid $pid
  if ss -lun | grep -q "127.0.0.1:$KAM "; then echo "udp $KAM busy: skipping kamailio"; else
    kamailio -f "$PEERS/kamailio/as-redirect.cfg" -DD -E -n "$KAM_CHILDREN" -m 128 -M 16 -P "$W/kamailio.pid" \
      -A "SP_KEY=\"$W/pki/sp.key\"" -A "X5U_URL=\"$X5U\"" > "$W/kamailio.log" 2>&1 &
    kpid=$!; PIDS+=($kpid); CPU_ROOT=$kpid
    for _ in $(seq 50); do ss -lun | grep -q "127.0.0.1:$KAM " && break; sleep 0.1; done; sleep 0.5
    for r in $SIP_RATES; do sipp_rate "kamailio+secsipid (n=$KAM_CHILDREN)" $KAM "$r" || break; done
    stop_pid $kpid
  fi
fi

if [[ " $PARTS " == *" sipv "* ]]; then
  echo "== SIP verification, redirect model (sipp uac_verify_load.xml, ${DUR}s per rate; rates stop at the first failure)"
  idents() {   # count -> $W/ids.csv (signed now: use within the 60 s freshness window)
    "$PY" "$ROOT/bench/make_identities.py" "$W/pki/sp.key" "$X5U" $ORIG $DEST "$1" "$W/ids.csv"
  }
  VS_ARGS=(-key x5u "$X5U")
  ours=0 theirs=0
  pid=$(start_serve fast); PIDS+=($pid); CPU_ROOT=$pid
  idents $((10 * DUR)); sipp_rate "warm-up stirshaken" $SIPV 10 "$PEERS/sipp/uac_verify_load.xml" -inf "$W/ids.csv" "${VS_ARGS[@]}" >/dev/null
  for r in $SIP_VRATES; do
    idents $((r * DUR))
    sipp_rate "stirshaken sip_verification" $SIPV "$r" "$PEERS/sipp/uac_verify_load.xml" -inf "$W/ids.csv" "${VS_ARGS[@]}" || break
    ours=$r
  done
  curl -s "http://127.0.0.1:$API/metrics" | grep -E '^stirshaken_verified_total' | sed 's/^/    /'
  stop_pid $pid
  if ss -lun | grep -q "127.0.0.1:$KAMV "; then echo "udp $KAMV busy: skipping kamailio"; else
    mkdir -p "$W/kcache"
    kamailio -f "$PEERS/kamailio/vs-redirect.cfg" -DD -E -n "$KAM_CHILDREN" -m 128 -M 16 -P "$W/kamailio-vs.pid" \
      -A "CA_OPT=\"CertCAFile=$W/pki/ca-root.pem\"" -A "CACHE_DIR=\"$W/kcache\"" > "$W/kamailio-vs.log" 2>&1 &
    kpid=$!; PIDS+=($kpid); CPU_ROOT=$kpid
    for _ in $(seq 50); do ss -lun | grep -q "127.0.0.1:$KAMV " && break; sleep 0.1; done; sleep 0.5
    idents $((10 * DUR)); sipp_rate "warm-up kamailio" $KAMV 10 "$PEERS/sipp/uac_verify_load.xml" -inf "$W/ids.csv" "${VS_ARGS[@]}" >/dev/null
    for r in $SIP_VRATES; do
      idents $((r * DUR))
      sipp_rate "kamailio+secsipid (n=$KAM_CHILDREN)" $KAMV "$r" "$PEERS/sipp/uac_verify_load.xml" -inf "$W/ids.csv" "${VS_ARGS[@]}" || break
      theirs=$r
    done
    stop_pid $kpid
  fi
  python3 -c "import sys; o,t=int(sys.argv[1]),int(sys.argv[2]); print(f'SIP verification: stirshaken highest passing rate {o}/s, Kamailio+secsipid {t}/s, ratio ' + (f'{o/t:.1f}x' if t else 'n/a') + ' (goal >= 3x)')" $ours $theirs
fi
