"""One nn.Module per token mixer or channel mixer; which one a layer uses comes from the config."""

from .attention import SoftmaxAttention
from .lightning import LightningAttention
from .mlp import SwiGLU

__all__ = ["SoftmaxAttention", "LightningAttention", "SwiGLU"]
