"""siliconflow-img-proxy: SiliconFlow image models behind an OpenAI-compatible API."""

__version__ = "0.1.0"
