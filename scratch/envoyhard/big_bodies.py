"""N connections each send a ~4 MiB chat body minus its last bytes and hold; print Envoy RSS and heap in use."""
import json, socket, sys, time, urllib.request
N = int(sys.argv[1]); pid = sys.argv[2]; admin = sys.argv[3] if len(sys.argv) > 3 else "9901"; port = int(sys.argv[4]) if len(sys.argv) > 4 else 8801
full = len(sys.argv) > 5 and sys.argv[5] == "full"
content = "word " * (4_000_000 // 5)
body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": content}]}).encode()
head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nx-demo-delay-ms: 20000\r\nContent-Length: %d\r\n\r\n" % len(body)
def rss(): return int([l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1]) // 1024
def heap():
    m = json.load(urllib.request.urlopen(f"http://127.0.0.1:{admin}/memory"))
    return (int(m["heap_size"]) - int(m["pageheap_unmapped"]) - int(m["pageheap_free"])) // 2**20
print("body", len(body), "rss", rss(), "heap used", heap(), flush=True)
socks = []
for i in range(N):
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(head + (body if full else body[:-100])); socks.append(s)
    if (i + 1) % 10 == 0:
        time.sleep(1); print(f"{i+1} held: rss", rss(), "heap used", heap(), flush=True)
time.sleep(2); print("final rss", rss(), "heap used", heap(), flush=True)
st = {}
for s in socks:
    s.settimeout(0.05)
    try: d = s.recv(300); k = d[:12].decode(); st[k] = st.get(k, 0) + 1; 
    except (TimeoutError, BlockingIOError): st["open"] = st.get("open", 0) + 1
print(st)
for s in socks: s.close()
time.sleep(2); print("after close rss", rss(), "heap used", heap())
