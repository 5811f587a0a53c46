"""The chat layer of the OpenAI server: DeepSeek-V4 prompt encoding and completion parsing.

Server use (docs/chat.md)::

    fmt = format_for_config(config_json)                      # V4, V4-Flash-0731 or V4.1
    thinking, effort = fmt.request_mode(req_thinking, req_effort)
    prompt = encode_messages(messages, tools, fmt=fmt, thinking=thinking, reasoning_effort=effort)
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids   # BOS is in the text
    parser = StreamParser(fmt, thinking)                      # one per choice
    for piece in pieces: send(parser.feed(piece))             # detokenised text, special tokens kept
    send(parser.finish("stop" | "length"))

Malformed requests raise :class:`ChatInputError` (a ``ValueError``; one line naming the field -> 400).
Model output never raises: :func:`parse_completion` / :class:`StreamParser` read it leniently.
"""

from v4stack.chat.deltas import (ContentDelta, Delta, FinishDelta, ParsedMessage, ParsedToolCall, ReasoningDelta,
                                 ToolCallDelta, aggregate)
from v4stack.chat.detokenize import IncrementalDetokenizer, load_v4_tokenizer
from v4stack.chat.encoder import encode_messages
from v4stack.chat.errors import ChatInputError
from v4stack.chat.formats import (FORMATS, V4, V4_1, V4_FLASH_0731, ChatFormat, format_by_name, format_for_config,
                                  format_for_model)
from v4stack.chat.parse import parse_completion
from v4stack.chat.stream import StreamParser
from v4stack.chat.strict import OfficialFormatError, parse_official

__all__ = [
    "ChatFormat", "V4", "V4_FLASH_0731", "V4_1", "FORMATS", "format_for_model", "format_for_config", "format_by_name",
    "encode_messages", "ChatInputError",
    "StreamParser", "parse_completion", "parse_official", "OfficialFormatError",
    "Delta", "ReasoningDelta", "ContentDelta", "ToolCallDelta", "FinishDelta", "ParsedMessage", "ParsedToolCall",
    "aggregate", "IncrementalDetokenizer", "load_v4_tokenizer",
]
