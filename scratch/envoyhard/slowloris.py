"""N slow connections (headers + 10 body bytes), then one normal request; print router/envoy RSS."""
import json, socket, sys, time, urllib.request, subprocess
N = int(sys.argv[1]); port = int(sys.argv[2]) if len(sys.argv) > 2 else 8801
pids = [int(p) for p in sys.argv[3].split(",")] if len(sys.argv) > 3 else []
def rss():
    out = {}
    for p in pids:
        try: out[p] = int([l for l in open(f"/proc/{p}/status") if l.startswith("VmRSS")][0].split()[1]) // 1024
        except OSError: out[p] = None
    return out
body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hello slow"}]}).encode()
head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
print("rss before", rss(), flush=True)
t0 = time.monotonic(); socks = []
for i in range(N):
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(head + body[:10]); socks.append(s)
time.sleep(3); print(f"{N} open in {time.monotonic()-t0:.1f}s; rss", rss(), flush=True)
def normal():
    t = time.monotonic()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r: return r.status, round(time.monotonic() - t, 3)
    except urllib.error.HTTPError as e: return e.code, round(time.monotonic() - t, 3), e.read()[:300]
    except Exception as e: return repr(e), round(time.monotonic() - t, 3)
for i in range(3): print("normal:", normal(), flush=True)
got = {}
for s in socks:
    s.settimeout(0.001)
    try: d = s.recv(200); got[d[:12]] = got.get(d[:12], 0) + 1
    except (TimeoutError, BlockingIOError): got["open"] = got.get("open", 0) + 1
    except OSError as e: got[type(e).__name__] = got.get(type(e).__name__, 0) + 1
print("slow conns:", got, flush=True)
for s in socks: s.close()
