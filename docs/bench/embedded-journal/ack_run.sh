#!/bin/bash
# $1: journal|ephemeral ; $2: run number
set -e
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
dir=$(mktemp -d)
if [ "$1" = journal ]; then extra=(--data-dir "$dir/data"); else extra=(--ephemeral); fi
XDG_DATA_HOME=$dir MEMGATE_LOG=error /work/main/target/release/memgate serve --embedded "${extra[@]}" --listen 127.0.0.1:$port --admin-listen 127.0.0.1:0 > $dir/log 2>&1 &
pid=$!
for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:$port/openapi.json && break; sleep 0.2; done
python3 /tmp/ack_latency.py $port 50 > /dev/null   # warm-up
echo "$1 run $2: $(python3 /tmp/ack_latency.py $port 500)"
kill $pid; wait $pid 2>/dev/null || true
rm -rf $dir
