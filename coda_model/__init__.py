"""coda_model: the CoDA masked-diffusion code model in plain PyTorch (no server, no training)."""

from .checkpoint import CheckpointError, load_model, save_model
from .config import CodaConfig
from .forward import ContextCarry
from .infill import InfillCandidate, InfillRequest, infill, infill_many
from .modeling import CodaModel
from .sampler import Cancelled, SamplerConfig, denoise
from .tokenizer import Tokenizer, TokenizerError, load_tokenizer

__all__ = [
    "Cancelled", "CheckpointError", "CodaConfig", "CodaModel", "InfillCandidate", "ContextCarry",
    "InfillRequest", "SamplerConfig",
    "Tokenizer", "TokenizerError", "denoise", "infill", "infill_many", "load_model",
    "load_tokenizer", "save_model",
]
