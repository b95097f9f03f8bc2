"""Cost of ext_proc connection recycling: N GET /v1/models (answered by the router at request headers, the cheapest
stream) at concurrency C through the Envoy on PORT; router workers' CPU per request and new router connections."""
import json, os, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
import http.client
port, admin, n, conc, label = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def pids():
    with urllib.request.urlopen("http://127.0.0.1:9190/readyz") as r: return [w["pid"] for w in json.load(r)["workers"]]
def cpu(ps):
    t = 0
    for p in ps:
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        t += int(f[11]) + int(f[12])
    return t / os.sysconf("SC_CLK_TCK")
def cx():
    s = urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?filter=cluster.semantic_router.upstream_cx_total").read().decode()
    return int(s.split(":")[1])
def worker(k):
    c = http.client.HTTPConnection("127.0.0.1", port); bad = 0
    for _ in range(k):
        c.request("GET", "/v1/models"); r = c.getresponse(); r.read(); bad += r.status != 200
    return bad
ps = pids(); c0, x0, t0 = cpu(ps), cx(), time.monotonic()
with ThreadPoolExecutor(conc) as ex: bad = sum(ex.map(worker, [n // conc] * conc))
t = time.monotonic() - t0; c1, x1 = cpu(ps), cx()
print(json.dumps({"label": label, "requests": n, "seconds": round(t, 2), "req_s": round(n / t), "router_cpu_ms_per_req": round((c1 - c0) * 1000 / n, 3), "new_router_connections": x1 - x0, "errors": bad, "load": os.getloadavg()[0]}), flush=True)
