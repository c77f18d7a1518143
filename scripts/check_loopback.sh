#!/usr/bin/env bash
# Prove the network rule: run a command (default: the test command) while capturing every packet on the
# machine's non-loopback interfaces, and fail if any was sent. Needs root and tcpdump
# (apt-get install tcpdump).
#
#   scripts/check_loopback.sh                    # runs ./scripts/test.sh -q
#   scripts/check_loopback.sh ./scripts/test.sh -k roundtrip
#
# Other programs on the machine can send packets too: run it on a quiet machine, and read the printed
# packets before blaming DDS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command -v tcpdump >/dev/null || { echo "check_loopback: tcpdump not installed" >&2; exit 2; }
[ "$#" -gt 0 ] || set -- "$ROOT/scripts/test.sh" -q
dir=$(mktemp -d)
pids=()
for iface in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1); do
  [ "$iface" = lo ] && continue
  tcpdump -i "$iface" -n -U -w "$dir/$iface.pcap" >/dev/null 2>&1 &
  pids+=($!)
done
sleep 1
set +e
"$@"
rc=$?
set -e
sleep 1
kill "${pids[@]}" 2>/dev/null || true
wait 2>/dev/null || true
total=0
for f in "$dir"/*.pcap; do
  [ -e "$f" ] || continue
  n=$(tcpdump -r "$f" -n 2>/dev/null | wc -l)
  total=$((total + n))
  echo "check_loopback: $(basename "$f" .pcap): $n packet(s)"
  [ "$n" -gt 0 ] && tcpdump -r "$f" -n 2>/dev/null | head -5
done
rm -rf "$dir"
echo "check_loopback: packets off loopback: $total (command exit $rc)"
[ "$rc" -eq 0 ] && [ "$total" -eq 0 ]
