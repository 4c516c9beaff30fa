"""llmgw: composable aiohttp pieces for an LLM gateway."""

__version__ = "0.1.0"

__all__ = ("__version__",)
