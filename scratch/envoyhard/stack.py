"""Start a stack from /tmp/eh/config.yaml with workdir /tmp/eh/w; runs until SIGTERM."""
import signal, sys, time
from pathlib import Path
from devstack.stack import Stack
w = Path("/tmp/eh/w"); w.mkdir(exist_ok=True)
s = Stack(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/eh/config.yaml"), w, log_to=w)
def term(*_): raise KeyboardInterrupt
signal.signal(signal.SIGTERM, term)
try:
    s.start(); print("READY", {n: p.pid for n, p in s.procs.items()}, flush=True)
    while all(p.poll() is None for p in s.procs.values()): time.sleep(0.5)
except KeyboardInterrupt: pass
finally: s.stop()
