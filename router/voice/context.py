"""A cascade's conversation as one chat request for its `llm` route.

Realtime items become chat messages: user and system messages (text, or the
transcript of input audio), assistant messages (text, or the transcript of what
was said, cut to what was heard after a truncation), function calls as assistant
`tool_calls` and their outputs as `tool` messages; a user's `input_image` parts
become `image_url` parts (for an `llm` route whose model takes images). Realtime
tools (`{type: function, name, description, parameters}`) become chat tools, with
`tool_choice` (a mode or a named function), `parallel_tool_calls`, and
`reasoning.effort` as `reasoning_effort`. A user's turn with no words, last (an idle
timeout's), reads `(silence)`: a text model would hear nothing else, and an LLM
request with no messages is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from router.errors import InvalidValue
from router.realtime.conversation import message_text


def item_text(item: Mapping[str, Any]) -> str:
    return message_text(item.get("content"))


#: the text of a last user turn with no words
SILENCE = "(silence)"


def chat_messages(instructions: str, items: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    items = list(items)
    for item in items:
        kind = item.get("type")
        if kind == "message":
            role = item.get("role")
            text = item_text(item)
            images = _images(item) if role == "user" else []
            if images:  # the llm route's model must take images
                parts = [{"type": "text", "text": text}] if text else []
                messages.append({"role": role, "content": parts + images})
            elif role in ("user", "assistant", "system") and text:
                messages.append({"role": role, "content": text})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""},
            }
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item.get("call_id"),
                    "content": str(item.get("output") or ""),
                }
            )
    if items and _silent(items[-1]):
        messages.append({"role": "user", "content": SILENCE})
    return messages


def _images(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A user item's `input_image` parts as chat `image_url` parts (data URIs as given)."""
    content = item.get("content")
    images = []
    for part in content if isinstance(content, list) else ():
        if isinstance(part, Mapping) and part.get("type") == "input_image":
            url = part.get("image_url")
            if isinstance(url, str) and url:
                image: dict[str, Any] = {"url": url}
                if part.get("detail") in ("auto", "low", "high"):
                    image["detail"] = part["detail"]
                images.append({"type": "image_url", "image_url": image})
    return images


def _silent(item: Mapping[str, Any]) -> bool:
    """A user's audio turn heard with no words (its transcript empty, not pending)."""
    content = item.get("content")
    return (
        item.get("role") == "user"
        and isinstance(content, list)
        and len(content) == 1
        and isinstance(content[0], Mapping)
        and content[0].get("type") == "input_audio"
        and content[0].get("transcript") == ""
    )


def chat_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        if isinstance(tool, Mapping) and tool.get("type") == "function" and tool.get("name"):
            function = {k: tool[k] for k in ("name", "description", "parameters") if k in tool}
            out.append({"type": "function", "function": function})
    return out


def chat_body(
    route: str,
    session: Mapping[str, Any],
    items: Iterable[Mapping[str, Any]],
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The chat request of one response (`overrides`: the response.create's `response`)."""
    config = {**session, **(overrides or {})}
    body: dict[str, Any] = {
        "model": route,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": chat_messages(str(config.get("instructions") or ""), items),
    }
    tools = chat_tools(config.get("tools") or ())
    if tools:
        body["tools"] = tools
        choice = chat_tool_choice(config.get("tool_choice"))
        if choice is not None:
            body["tool_choice"] = choice
        if isinstance(config.get("parallel_tool_calls"), bool):
            body["parallel_tool_calls"] = config["parallel_tool_calls"]
    limit = config.get("max_output_tokens")
    if isinstance(limit, int):
        body["max_tokens"] = limit
    reasoning = config.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, Mapping) else None
    if isinstance(effort, str) and effort:
        body["reasoning_effort"] = effort
    return body


def chat_tool_choice(choice: object) -> object:
    """A Realtime `tool_choice` as chat's: a mode, or a named function
    (`{type: function, name}` -> `{type: function, function: {name}}`); None for
    anything else (an MCP tool: the cascade has none)."""
    if isinstance(choice, str) and choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        name = choice.get("name")
        if isinstance(name, str) and name:
            return {"type": "function", "function": {"name": name}}
    return None


def response_input(given: object, conversation: Sequence[Mapping[str, Any]]) -> list[Any]:
    """A `response.create`'s own context (`response.input`): its items, an
    `item_reference` standing for the conversation's item of that id."""
    if not isinstance(given, list):
        raise InvalidValue("'response.input' must be an array of items")
    items = []
    for entry in given:
        if not isinstance(entry, Mapping):
            raise InvalidValue("each 'response.input' entry must be an item")
        if entry.get("type") != "item_reference":
            items.append(entry)
            continue
        found = next((it for it in conversation if it["id"] == entry.get("id")), None)
        if found is None:
            raise InvalidValue(
                "'response.input' refers to an item not in the conversation: "
                f"{str(entry.get('id'))[:100]!r}"
            )
        items.append(found)
    return items
