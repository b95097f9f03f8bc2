import sys, yaml
from pathlib import Path
sys.path.insert(0, "/work/wt-envoyhard")
cfg = yaml.safe_load(Path("/work/wt-envoyhard/config/config.yaml").read_text())
cfg["server"]["workers"] = 2
cfg["semantic_cache"]["backend"] = "memory"
cfg["observability"]["log_format"] = "json"
Path("/tmp/eh/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
