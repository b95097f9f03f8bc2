"""Export MiniLM to ONNX. Runs ONLY inside the throwaway build venv (`.venv-build`, has torch).

It is started as a script by `offline.build`; the router runtime never imports it, so torch never
becomes a runtime dependency. One graph yields both the sentence embedding (cache key, domain/jailbreak heads)
and the token states (PII tagging), so a request costs one ONNX run.

Usage: python export_onnx.py --out DIR (--model-dir DIR | --hub-id ID) [--fp32]
Prints one JSON line with the versions used at the end (read by build.py for the manifest).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import onnx
import onnxruntime
import torch
import transformers
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.optimizer import optimize_model

OPSET = 17
HEADS = 12
HIDDEN = 384


class SentenceGraph(torch.nn.Module):
    """BERT + mean pooling + L2 norm, with the token states exposed as a second output.

    No attention mask: the encoder never pads (one window, or head and tail windows of equal length), so
    a mask would be all ones; dropping it removes the mask arithmetic from every layer (-1.2 ms at 256 tokens).
    """

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.bert(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        mean = states.mean(dim=1)
        embedding = mean / mean.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        return embedding, states


def _load(model_dir: str | None, hub_id: str | None, out: Path) -> torch.nn.Module:
    """Load weights from a local directory or a hub id (the hub branch needs network access)."""
    source = model_dir or hub_id
    if source is None:
        raise SystemExit("one of --model-dir / --hub-id is required")
    model = transformers.AutoModel.from_pretrained(source, attn_implementation="eager")
    if model_dir is not None:
        shutil.copyfile(Path(model_dir) / "tokenizer.json", out / "tokenizer.json")
    else:
        transformers.AutoTokenizer.from_pretrained(source).backend_tokenizer.save(str(out / "tokenizer.json"))
    return model.eval()


def _export(model: torch.nn.Module, path: Path) -> None:
    ids = torch.tensor([[101, 7592, 2088, 102]], dtype=torch.int64)
    torch.onnx.export(
        SentenceGraph(model),
        (ids,),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=["input_ids"],
        output_names=["embedding", "token_states"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "seq"},
            "embedding": {0: "batch"},
            "token_states": {0: "batch", 1: "seq"},
        },
    )


def _fusions() -> FusionOptions:
    """BERT fusions minus the two that are slower on CPU here (onnxruntime 1.32, 1 thread, AVX-512).

    SkipLayerNormalization took 6 ms of a 256-token run where Add + LayerNormalization take 1.1 ms, and the
    fused QAttention lost to quantised Q/K/V MatMuls plus plain attention: without both, int8 p50 went from
    2.40 / 4.14 / 33.7 ms to 1.82 / 3.38 / 27.9 ms at 16 / 32 / 256 tokens. The encoder also disables them in
    onnxruntime's own load-time optimiser (encoder.SLOW_FUSIONS), which would otherwise redo them.
    """
    options = FusionOptions("bert")
    options.enable_skip_layer_norm = False
    options.enable_attention = False
    return options


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--model-dir")
    parser.add_argument("--hub-id")
    parser.add_argument("--fp32", action="store_true", help="keep model_fp32.onnx next to the int8 model")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    with torch.no_grad():
        model = _load(args.model_dir, args.hub_id, args.out)
        raw = args.out / "raw.onnx"
        print("export: torch.onnx.export (opset 17, eager attention)", file=sys.stderr, flush=True)
        _export(model, raw)
    optimise_and_quantise(raw, args.out, keep_fp32=args.fp32)
    print(json.dumps(versions()))


def optimise_and_quantise(raw: Path, out: Path, keep_fp32: bool = False) -> None:
    """raw.onnx (deleted) -> out/model_int8.onnx: BERT fusions (`_fusions`), then dynamic int8 per channel.
    Shared with the cache's pair model (offline/train_cache_pair.py), so both graphs get the same treatment."""
    print("export: onnxruntime transformer optimizer (bert)", file=sys.stderr, flush=True)
    fp32 = out / "model_fp32.onnx"
    optimize_model(
        str(raw), model_type="bert", num_heads=HEADS, hidden_size=HIDDEN, optimization_options=_fusions()
    ).save_model_to_file(str(fp32))
    raw.unlink()
    print("export: dynamic int8 quantisation (per channel)", file=sys.stderr, flush=True)
    quantize_dynamic(
        str(fp32),
        str(out / "model_int8.onnx"),
        weight_type=QuantType.QInt8,
        per_channel=True,
        # fused ops (com.microsoft domain) defeat shape inference; their outputs are float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    if not keep_fp32:
        fp32.unlink()


def versions() -> dict[str, str]:
    """The library versions an export used (recorded in the manifest)."""
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": sys.version.split()[0],
    }


if __name__ == "__main__":
    main(sys.argv[1:])
