"""The chat-completions message format the teachers build and read: an image as a data URL,
a message's content as a list of parts."""
from __future__ import annotations

import base64
import mimetypes
from pathlib import Path


def image_data_url(path: str | Path) -> str:
    mime = mimetypes.guess_type(str(path))[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


def content_parts(message: dict) -> list[dict]:
    """A chat message's content as a list of parts: a plain string is one text part."""
    content = message["content"]
    return content if isinstance(content, list) else [{"type": "text", "text": content}]
