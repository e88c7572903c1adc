"""The schemas of the router's OpenAPI document (`openapi.py`): OpenAI's request bodies as
far as the router reads them (every other field passes through, `additionalProperties`),
and the answers it relays or makes."""

from __future__ import annotations

from typing import Any


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "code": {"type": "string", "nullable": True},
                    "param": {"type": "string", "nullable": True},
                },
            }
        },
    },
    "Message": {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string"},
            "content": {
                "nullable": True,
                "oneOf": [
                    {"type": "string"},
                    {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"type": {"type": "string"}, "text": {"type": "string"}},
                        },
                    },
                ],
            },
        },
        "additionalProperties": True,
    },
    "StreamOptions": {
        "type": "object",
        "properties": {"include_usage": {"type": "boolean"}},
        "additionalProperties": True,
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "a route name"},
            "messages": {"type": "array", "minItems": 1, "items": ref("Message")},
            "stream": {"type": "boolean", "default": False},
            "stream_options": ref("StreamOptions"),
            "max_tokens": {"type": "integer", "minimum": 0},
            "max_completion_tokens": {"type": "integer", "minimum": 0},
            "user": {"type": "string"},
            "store": {
                "type": "boolean",
                "default": False,
                "description": "stored by the target that answers; the router remembers which",
            },
        },
        "additionalProperties": True,
    },
    "CompletionRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "a route name"},
            "prompt": {
                "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
            },
            "stream": {"type": "boolean", "default": False},
            "stream_options": ref("StreamOptions"),
            "max_tokens": {"type": "integer", "minimum": 0},
        },
        "additionalProperties": True,
    },
    "Completion": {
        "type": "object",
        "description": "the target's answer, relayed unchanged (OpenAI's completion object)",
        "required": ["choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": "object", "nullable": True},
        },
    },
    "ResponsesRequest": {
        "type": "object",
        "required": ["model"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "a route name"},
            "input": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": ref("ResponseItem")},
                ]
            },
            "instructions": {"type": "string"},
            "stream": {"type": "boolean", "default": False},
            "store": {"type": "boolean", "default": True},
            "previous_response_id": {
                "type": "string",
                "minLength": 1,
                "description": "sent to the target that stored it (409/503 if it cannot be)",
            },
            "max_output_tokens": {"type": "integer", "minimum": 16},
        },
        "additionalProperties": True,
    },
    "ResponseItem": {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "role": {"type": "string", "enum": ["user", "assistant", "system", "developer"]},
            "content": {
                "oneOf": [
                    {"type": "string"},
                    {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "type": {"type": "string", "enum": ["input_text"]},
                                "text": {"type": "string"},
                            },
                        },
                    },
                ]
            },
        },
        "additionalProperties": True,
    },
    "Response": {
        "type": "object",
        "description": "the target's answer, relayed unchanged (OpenAI's response object)",
        "required": ["id", "object"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string"},
            "status": {"type": "string"},
            "output": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": "object", "nullable": True},
        },
    },
    "EmbeddingsRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "a route name"},
            "input": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "minItems": 1, "items": {"type": "string"}},
                    {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    },
                ]
            },
            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
            "user": {"type": "string"},
        },
        "additionalProperties": True,
    },
    "EmbeddingList": {
        "type": "object",
        "description": "the target's answer, relayed unchanged",
        "required": ["data"],
        "properties": {
            "object": {"type": "string"},
            "data": {"type": "array", "items": {"type": "object"}},
            "model": {"type": "string"},
            "usage": {"type": "object", "nullable": True},
        },
    },
    "ItemList": {
        "type": "object",
        "required": ["data"],
        "properties": {
            "object": {"type": "string"},
            "data": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Object": {"type": "object", "additionalProperties": True},
    "ResponsesCall": {
        "type": "object",
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "a route name"},
            "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {}}]},
            "previous_response_id": {"type": "string", "minLength": 1},
        },
        "additionalProperties": True,
    },
    "ModerationRequest": {
        "type": "object",
        "required": ["input"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "a route name"},
            "input": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {}},
                ]
            },
        },
        "additionalProperties": True,
    },
    "InputTokens": {
        "type": "object",
        "required": ["object", "input_tokens"],
        "properties": {
            "object": {"type": "string", "enum": ["response.input_tokens"]},
            "input_tokens": {"type": "integer"},
        },
    },
    "Compaction": {
        "type": "object",
        "required": ["id", "object", "output"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["response.compaction"]},
            "output": {"type": "array", "items": {"type": "object"}},
        },
    },
    "ConversationCreate": {
        "type": "object",
        "properties": {
            "model": {
                "type": "string",
                "minLength": 1,
                "description": "the route to keep it on (not sent upstream); optional where "
                "one route serves /v1/responses to the key",
            },
            "items": {"type": "array", "items": {"type": "object"}},
            "metadata": {"type": "object"},
        },
        "additionalProperties": True,
    },
    "Conversation": {
        "type": "object",
        "required": ["id", "object"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["conversation"]},
            "created_at": {"type": "integer"},
            "metadata": {"type": "object"},
        },
    },
    "Deleted": {
        "type": "object",
        "required": ["id", "deleted"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string"},
            "deleted": {"type": "boolean"},
        },
    },
    "ClientSecretRequest": {
        "type": "object",
        "properties": {
            "expires_after": {
                "type": "object",
                "properties": {
                    "anchor": {"type": "string", "enum": ["created_at"]},
                    "seconds": {"type": "integer", "minimum": 10, "maximum": 7200},
                },
            },
            "session": {
                "type": "object",
                "description": "`type: realtime` or `transcription`, `model` (a realtime "
                "route), and the configuration the session starts with",
                "additionalProperties": True,
            },
        },
        "additionalProperties": True,
    },
    "ClientSecret": {
        "type": "object",
        "required": ["value", "expires_at", "session"],
        "properties": {
            "value": {"type": "string"},
            "expires_at": {"type": "integer"},
            "session": {"type": "object"},
        },
    },
    "AudioForm": {
        "type": "object",
        "required": ["file", "model"],
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "model": {"type": "string", "description": "a route of stt targets"},
            "prompt": {"type": "string"},
            "response_format": {"type": "string"},
        },
        "additionalProperties": True,
    },
    "Transcript": {
        "type": "object",
        "description": "the target's answer as it sent it (also `text/plain` if asked)",
        "required": ["text"],
        "properties": {"text": {"type": "string"}},
    },
    "SpeechRequest": {
        "type": "object",
        "required": ["model", "input", "voice"],
        "properties": {
            "model": {"type": "string", "description": "a route of tts targets"},
            "input": {"type": "string", "minLength": 1},
            "voice": {"type": "string"},
            "speed": {"type": "number"},
            "response_format": {
                "type": "string",
                "enum": ["mp3", "opus", "aac", "flac", "wav", "pcm"],
                "default": "mp3",
            },
        },
        "additionalProperties": True,
    },
    "Model": {
        "type": "object",
        "required": ["id", "object"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["model"]},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
            "capabilities": {"type": "array", "items": {"type": "string"}},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": ref("Model")},
        },
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    },
    "AdminTargets": {
        "type": "object",
        "required": ["targets", "routes"],
        "properties": {
            "targets": {"type": "array", "items": {"type": "object"}},
            "routes": {"type": "object"},
        },
    },
}
