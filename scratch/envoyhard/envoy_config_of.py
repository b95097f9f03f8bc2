"""Envoy config for /tmp/eh/config.yaml from the code on sys.path[0] (argv[1]), on port argv[2] / admin argv[3]."""
import sys, yaml
sys.path.insert(0, sys.argv[1])
from router.config import parse_config
from router.envoy_config import envoy_config
raw = yaml.safe_load(open("/tmp/eh/config.yaml"))
cfg = parse_config(raw)
c = envoy_config(cfg)
c["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = int(sys.argv[2])
c["admin"]["address"]["socket_address"]["port_value"] = int(sys.argv[3])
print(yaml.safe_dump(c))
