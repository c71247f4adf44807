"""Rule fetch_torchvision_weights: download one model's default ImageNet weights into TORCH_HOME."""

import json
import os
from pathlib import Path

from melrepro.report.logs import log_to_file

log_to_file(snakemake.log[0])
os.environ["TORCH_HOME"] = os.path.abspath(snakemake.params.torch_home)

import torchvision  # noqa: E402  (after TORCH_HOME: torch reads it when it looks for weights)

model = snakemake.wildcards.model
weights = torchvision.models.get_model_weights(model).DEFAULT
# check_hash: torchvision compares the file's SHA-256 with the prefix in its name.
state = weights.get_state_dict(progress=False, check_hash=True)
record = {
    "model": model,
    "weights": f"torchvision:{model}:{weights.name}",
    "url": weights.url,
    "file": str(Path(os.environ["TORCH_HOME"], "hub", "checkpoints", Path(weights.url).name)),
    "tensors": len(state),
}
Path(snakemake.output.marker).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
