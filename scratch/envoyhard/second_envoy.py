"""Second Envoy (port 8811, admin 9911) from /tmp/eh/config.yaml with envoy.max_heap_mb = argv[1]; runs until killed."""
import subprocess, sys, yaml
sys.path.insert(0, "/work/wt-envoyhard")
from router.config import parse_config
from router.envoy_config import envoy_config
raw = yaml.safe_load(open("/tmp/eh/config.yaml"))
raw["envoy"].update(port=8821, admin_port=9921, max_heap_mb=int(sys.argv[1]), max_requests=int(sys.argv[2]) if len(sys.argv) > 2 else 2048)
c = envoy_config(parse_config(raw))
open("/tmp/eh/heap.yaml", "w").write(yaml.safe_dump(c))

