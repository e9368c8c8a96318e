"""Model formats, the generator, input preparation and the reference inference."""

from fsd_inference.model.network import Network, resolve_bias, resolve_dtype

__all__ = ["Network", "resolve_bias", "resolve_dtype"]
