"""worker_share.py, extended: after the replacement is up, 8 clients for 30 s; each worker's streams per 5 s window."""
import json, os, signal, time, urllib.request, uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
B = f"http://127.0.0.1:{os.environ.get('PORT', '8801')}/v1/chat/completions"
def chat(headers=None):
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": f"say something {uuid.uuid4().hex[:8]}"}]})
    req = urllib.request.Request(B, data=body.encode(), headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r: return r.status
    except urllib.error.HTTPError as e: return e.code
def workers():
    with urllib.request.urlopen("http://127.0.0.1:9190/readyz") as r:
        return {w["pid"]: w["streams"] for w in json.load(r)["workers"]}
with ThreadPoolExecutor(200) as ex:
    print("burst", Counter(ex.map(lambda _: chat({"x-demo-delay-ms": "1500"}), range(200))), flush=True)
before = workers(); victim = max(before); os.kill(victim, signal.SIGKILL); t_kill = time.monotonic()
while True:
    time.sleep(0.5); w = workers()
    if victim not in w and len(w) == 2: break
print(f"replaced after {time.monotonic()-t_kill:.1f}s", flush=True)
stop = time.monotonic() + 30
def loop(_):
    n = Counter()
    while time.monotonic() < stop: n[chat()] += 1
    return n
prev = workers(); t0 = time.monotonic()
with ThreadPoolExecutor(8) as ex:
    fut = ex.map(loop, range(8))
    while time.monotonic() < stop:
        time.sleep(5); cur = workers()
        print(f"t+{time.monotonic()-t0:4.1f}s since kill+{time.monotonic()-t_kill:4.1f}s", {p: cur[p] - prev.get(p, 0) for p in cur}, flush=True); prev = cur
    print("statuses", sum(fut, Counter()))
