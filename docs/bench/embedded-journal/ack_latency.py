import http.client, json, sys, time, statistics
port = int(sys.argv[1]); n = int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port)
lat = []
for i in range(n):
    body = json.dumps({"content": f"ack latency probe {i}", "type": "semantic"})
    t = time.perf_counter()
    conn.request("POST", "/memories", body, {"content-type": "application/json"})
    r = conn.getresponse(); r.read()
    lat.append((time.perf_counter() - t) * 1000)
    assert r.status == 202, r.status
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(json.dumps({"n": n, "p50": round(q(0.5), 3), "p95": round(q(0.95), 3), "p99": round(q(0.99), 3)}))
