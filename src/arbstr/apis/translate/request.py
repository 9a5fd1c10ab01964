"""An Anthropic Messages request rewritten as a chat completions request. Pure.

Mapped: ``system`` (string or text blocks, joined by blank lines) -> a system message;
``messages`` (string content or blocks: ``text``, ``image`` -> ``image_url`` (base64 as a
data URL), ``document`` (text source -> text, base64 -> a ``file`` part), ``tool_use`` ->
the assistant's ``tool_calls``, ``tool_result`` -> ``role: tool`` messages placed before the
rest of that user turn, an error result prefixed ``[tool error]``, images in a result moved
to the user message after the tool messages since tool messages carry text only);
``tools`` (custom tools) -> function tools; ``tool_choice`` (auto/any/tool/none, and
``disable_parallel_tool_use`` -> ``parallel_tool_calls: false``); ``max_tokens``,
``temperature``, ``top_p``, ``stop_sequences`` -> ``stop``, ``stream`` (with
``stream_options.include_usage``), ``metadata.user_id`` -> ``user``; the model is the routed one.

Dropped: ``thinking`` and ``thinking`` / ``redacted_thinking`` blocks (chat has no signed
reasoning to send back), ``top_k``, ``service_tier``, ``container``, ``mcp_servers``,
``context_management``, server tools (a ``type`` other than ``custom``, e.g. web search),
``cache_control`` and ``citations`` on blocks, server tool blocks, and any other field.
"""

from __future__ import annotations

from typing import Any

import msgspec

from arbstr.apis.translate.common import decode_any, encode
from arbstr.errors import InvalidRequest

Json = dict[str, Any]


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_request")


def _blocks(content: object, where: str) -> list[Json]:
    """Content as a list of blocks (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list) and all(isinstance(b, dict) for b in content):
        return content
    raise _bad(f"{where} must be a string or an array of content blocks")


def _text(block: Json) -> str:
    text = block.get("text")
    return text if isinstance(text, str) else ""


def _image_part(block: Json) -> Json | None:
    source = block.get("source")
    if not isinstance(source, dict):
        return None
    if source.get("type") == "base64":
        media, data = source.get("media_type"), source.get("data")
        if isinstance(media, str) and isinstance(data, str):
            return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    return None


def _document_part(block: Json) -> Json | None:
    source = block.get("source")
    if not isinstance(source, dict):
        return None
    kind = source.get("type")
    if kind == "text" and isinstance(source.get("data"), str):
        return {"type": "text", "text": source["data"]}
    if kind == "base64" and isinstance(source.get("data"), str):
        media = source.get("media_type") or "application/pdf"
        file: Json = {"file_data": f"data:{media};base64,{source['data']}"}
        if isinstance(block.get("title"), str):
            file["filename"] = block["title"]
        return {"type": "file", "file": file}
    return None


def _user_part(block: Json) -> Json | None:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": _text(block)}
    if kind == "image":
        return _image_part(block)
    if kind == "document":
        return _document_part(block)
    return None


def _user_content(parts: list[Json]) -> str | list[Json]:
    """One text part as a plain string (what every provider accepts), else the parts."""
    if len(parts) == 1 and parts[0]["type"] == "text":
        text: str = parts[0]["text"]
        return text
    return parts


def _tool_result(block: Json, images: list[Json]) -> Json:
    """A ``role: tool`` message; the result's images are appended to ``images``."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str):
        raise _bad("a tool_result block needs a string 'tool_use_id'")
    content = block.get("content")
    texts: list[str] = []
    if content is not None:
        for part in _blocks(content, "tool_result content"):
            if part.get("type") == "image":
                image = _image_part(part)
                if image is not None:
                    images.append(image)
            elif part.get("type") == "text":
                texts.append(_text(part))
    text = "\n".join(texts)
    if block.get("is_error") is True:
        text = f"[tool error] {text}" if text else "[tool error]"
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _user_messages(content: object) -> list[Json]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[Json] = []
    images: list[Json] = []
    parts: list[Json] = []
    for block in _blocks(content, "message content"):
        if block.get("type") == "tool_result":
            out.append(_tool_result(block, images))
        else:
            part = _user_part(block)
            if part is not None:
                parts.append(part)
    parts = images + parts
    if parts or not out:
        out.append({"role": "user", "content": _user_content(parts) if parts else ""})
    return out


def _tool_call(block: Json) -> Json:
    call_id, name = block.get("id"), block.get("name")
    if not isinstance(call_id, str) or not isinstance(name, str):
        raise _bad("a tool_use block needs string 'id' and 'name'")
    arguments = encode(block.get("input", {})).decode()
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _assistant_message(content: object) -> Json | None:
    """The assistant turn; None when nothing is left of it (only thinking blocks), since
    several providers refuse an empty assistant message."""
    if isinstance(content, str):
        return {"role": "assistant", "content": content} if content else None
    texts: list[str] = []
    calls: list[Json] = []
    for block in _blocks(content, "message content"):
        kind = block.get("type")
        if kind == "text":
            texts.append(_text(block))
        elif kind == "tool_use":
            calls.append(_tool_call(block))
    text = "\n\n".join(t for t in texts if t)
    if not calls:
        return {"role": "assistant", "content": text} if text else None
    return {"role": "assistant", "content": text or None, "tool_calls": calls}


def _system_text(system: object) -> str:
    if isinstance(system, str):
        return system
    return "\n\n".join(_text(b) for b in _blocks(system, "system") if b.get("type") == "text")


def _messages(body: Json) -> list[Json]:
    out: list[Json] = []
    system = body.get("system")
    if system is not None and (text := _system_text(system)):
        out.append({"role": "system", "content": text})
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _bad("'messages' must be an array")
    for message in messages:
        if not isinstance(message, dict):
            raise _bad("each message must be an object")
        role, content = message.get("role"), message.get("content")
        if role == "user":
            out.extend(_user_messages(content))
        elif role == "assistant":
            if (assistant := _assistant_message(content)) is not None:
                out.append(assistant)
        elif role == "system":
            # not in Anthropic's documented API, but Claude Code sends one (last) at times;
            # chat completions has the role, so it keeps its place
            if text := _system_text(content):
                out.append({"role": "system", "content": text})
        else:
            raise _bad(f"message role must be 'user', 'assistant' or 'system', not {role!r}")
    return out


def _tools(tools: object) -> list[Json]:
    if not isinstance(tools, list):
        raise _bad("'tools' must be an array")
    out: list[Json] = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type", "custom") not in ("custom", None):
            continue  # a server tool (web search, code execution...) no chat provider runs
        name = tool.get("name")
        if not isinstance(name, str):
            raise _bad("each tool needs a string 'name'")
        function: Json = {"name": name}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        schema = tool.get("input_schema")
        function["parameters"] = schema if isinstance(schema, dict) else {"type": "object"}
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: object, chat: Json) -> None:
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    if choice.get("disable_parallel_tool_use") is True and "tools" in chat:
        chat["parallel_tool_calls"] = False


def messages_to_chat(body: bytes, model: str) -> bytes:
    """The chat completions body for an Anthropic Messages body, asking for ``model``.
    Raises :class:`InvalidRequest` (400) on a body that is not a Messages request."""
    try:
        obj = decode_any(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(
            f"request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(obj, dict):
        raise _bad("request body is not a JSON object")
    chat: Json = {"model": model, "messages": _messages(obj)}
    for key in ("max_tokens", "temperature", "top_p"):
        if obj.get(key) is not None:
            chat[key] = obj[key]
    stop = obj.get("stop_sequences")
    if isinstance(stop, list) and stop:
        chat["stop"] = stop
    if obj.get("tools"):
        tools = _tools(obj["tools"])
        if tools:
            chat["tools"] = tools
            _tool_choice(obj.get("tool_choice"), chat)
    if obj.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    metadata = obj.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    return encode(chat)
