"""The three DeepSeek-V4 chat formats as data: token spellings, DSML tag names, reasoning-effort scheme.

One encoder and one parser serve V4 (V4-Flash / V4-Pro), V4-Flash-0731 and V4.1; everything that differs
between them is a field of :class:`ChatFormat`. Byte-level truth: ``/work/shared/golden/chat`` (README
sections 4, 7 and 8) and model_spec section 6.

Knows: the strings and the effort rules. Does not know: messages, tokenizers or parsing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from v4stack.chat.errors import ChatInputError

# Effort texts. "Absolute maximum" is the original V4 "max" text and the 0731 "high" text; "Beyond
# maximum" is the 0731 "max" text (golden README section 7). Each ends with the blank line that separates
# it from the first message.
ABSOLUTE_MAXIMUM_TEXT = (
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root "
    "cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial "
    "scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
    "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n")
BEYOND_MAXIMUM_TEXT = (
    "Reasoning Effort: Beyond maximum \u2014 exhaustive, relentless, and uncompromising.\n"
    "You MUST reason with the utmost depth and rigor, leaving absolutely nothing to chance: exhaustively "
    "decompose the problem into its most fundamental components, trace every causal chain to its root, and "
    "resolve the underlying cause rather than any surface symptom.\n"
    "Do not stop reasoning until you have independently verified the solution from multiple angles and are "
    "certain that no assumption remains unchecked and no error remains undiscovered.\n\n")
# V4.1 writes a number; {level} is an int in [NUMERIC_EFFORT_MIN, NUMERIC_EFFORT_MAX].
NUMERIC_EFFORT_TEMPLATE = ("Reasoning Effort: {level} (range 1-100, the higher the value, the more thorough "
                           "the reasoning)\n\n")
NUMERIC_EFFORT_MIN, NUMERIC_EFFORT_MAX = 1, 100


@dataclass(frozen=True)
class NamedEffort:
    """Effort as a fixed text per name (V4, V4-Flash-0731). ``texts`` maps every accepted name to the text
    written right after BOS in thinking mode ("" = nothing); None (unset) writes nothing."""

    texts: Mapping[str, str]

    def __post_init__(self) -> None:
        if not self.texts or not all(isinstance(k, str) and isinstance(v, str) for k, v in self.texts.items()):
            raise ValueError("NamedEffort.texts: expected a non-empty mapping of name -> text")
        object.__setattr__(self, "texts", MappingProxyType(dict(self.texts)))

    def check(self, effort: Any, param: str = "reasoning_effort") -> str | None:
        """``effort`` validated: None or one of the names."""
        if effort is None or (isinstance(effort, str) and effort in self.texts):
            return effort
        raise ChatInputError(param, effort, "null or one of " + ", ".join(repr(n) for n in self.texts))

    def prefix(self, effort: Any, thinking: bool) -> str:
        """The text after BOS; effort is ignored in chat mode (but still validated)."""
        effort = self.check(effort)
        return self.texts[effort] if thinking and effort is not None else ""


@dataclass(frozen=True)
class NumericEffort:
    """Effort as a number in 1..100 (V4.1): names map to numbers, unset means ``default``; in thinking mode
    the line is always written (so thinking always opens a system section)."""

    names: Mapping[str, int]
    default: int
    template: str = NUMERIC_EFFORT_TEMPLATE

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", MappingProxyType(dict(self.names)))
        for value in (*self.names.values(), self.default):
            if not NUMERIC_EFFORT_MIN <= value <= NUMERIC_EFFORT_MAX:
                raise ValueError(f"NumericEffort: level {value} outside {NUMERIC_EFFORT_MIN}..{NUMERIC_EFFORT_MAX}")
        if "{level}" not in self.template:
            raise ValueError("NumericEffort.template: needs a {level} field")

    def check(self, effort: Any, param: str = "reasoning_effort") -> int:
        """``effort`` as its number: None -> default, a name -> its number, an int in range -> itself."""
        if effort is None:
            return self.default
        if isinstance(effort, str) and effort in self.names:
            return self.names[effort]
        if isinstance(effort, int) and not isinstance(effort, bool) \
                and NUMERIC_EFFORT_MIN <= effort <= NUMERIC_EFFORT_MAX:
            return effort
        raise ChatInputError(param, effort, f"null, an integer {NUMERIC_EFFORT_MIN}..{NUMERIC_EFFORT_MAX} or one of "
                             + ", ".join(repr(n) for n in self.names))

    def prefix(self, effort: Any, thinking: bool) -> str:
        level = self.check(effort)
        return self.template.format(level=level) if thinking else ""


EffortScheme = NamedEffort | NumericEffort

# Quick-instruction task tokens (internal; golden README section 4). "action" follows the assistant
# opener; the others follow the user text and replace the opener; "title" follows an assistant turn's EOS.
TASK_TOKENS = MappingProxyType({
    "action": "<｜action｜>", "query": "<｜query｜>", "authority": "<｜authority｜>", "domain": "<｜domain｜>",
    "read_url": "<｜read_url｜>", "title": "<｜title｜>"})
OPENER_TASKS = frozenset({"action"})            # written after <｜Assistant｜> + think token
ASSISTANT_TASKS = frozenset({"title"})          # written after the assistant turn
# the rest are written in place of the opener


@dataclass(frozen=True)
class ChatFormat:
    """One chat format. Every string the encoder writes or the parser looks for comes from here.

    ``block_tag``/``invoke_tag``/``parameter_tag`` are the DSML tag names as written after the marker
    (V4.1 spells them with a leading space). ``system_token`` (V4.1 only) opens a system section; with it,
    a system message after the first counts as a user turn (it writes the generation opener and moves the
    drop_thinking boundary). ``wrap_dict_arguments``: tool-call ``arguments`` given as a dict instead of a
    JSON string become one ``arguments`` parameter (the official V4 encoder) instead of their keys (V4.1).
    ``default_thinking``/``default_effort`` are what a server uses when a request sets neither.
    """

    name: str
    effort: EffortScheme
    block_tag: str = "tool_calls"
    invoke_tag: str = "invoke"
    parameter_tag: str = "parameter"
    system_token: str | None = None
    wrap_dict_arguments: bool = True
    default_thinking: bool = False
    default_effort: str | int | None = None
    bos: str = "<｜begin▁of▁sentence｜>"
    eos: str = "<｜end▁of▁sentence｜>"
    user_token: str = "<｜User｜>"
    assistant_token: str = "<｜Assistant｜>"
    latest_reminder_token: str = "<｜latest_reminder｜>"
    think_open: str = "<think>"
    think_close: str = "</think>"
    dsml: str = "｜DSML｜"
    task_tokens: Mapping[str, str] = field(default_factory=lambda: TASK_TOKENS)

    def __post_init__(self) -> None:
        for name in ("name", "block_tag", "invoke_tag", "parameter_tag", "bos", "eos", "user_token",
                     "assistant_token", "latest_reminder_token", "think_open", "think_close", "dsml"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"ChatFormat.{name}: expected a non-empty string, got {value!r}")
        if len({self.block_tag.strip(), self.invoke_tag.strip(), self.parameter_tag.strip()}) != 3:
            raise ValueError("ChatFormat: block, invoke and parameter tags must differ")
        if self.system_token is not None and not self.system_token:
            raise ValueError("ChatFormat.system_token: expected None or a non-empty string")
        if set(self.task_tokens) != set(TASK_TOKENS):
            raise ValueError(f"ChatFormat.task_tokens: expected the tasks {sorted(TASK_TOKENS)}")
        self.effort.check(self.default_effort, "ChatFormat.default_effort")

    # DSML tag texts -------------------------------------------------------------------------------------
    def open_tag(self, tag: str, attrs: str = "") -> str:
        return f"<{self.dsml}{tag}{attrs}>"

    def close_tag(self, tag: str) -> str:
        return f"</{self.dsml}{tag}>"

    @property
    def block_open(self) -> str:
        """The exact text that starts a tool block, separator included (``\\n\\n<｜DSML｜tool_calls``)."""
        return f"\n\n<{self.dsml}{self.block_tag}"

    def request_mode(self, thinking: bool | None, reasoning_effort: Any = None) -> tuple[bool, Any]:
        """(thinking, effort) for a request that may leave either unset: an effort alone turns thinking on;
        neither set gives the format's served defaults (V4-Flash-0731: thinking with "high", as vLLM 0.32)."""
        if thinking is None and reasoning_effort is None:
            return self.default_thinking, self.default_effort
        if thinking is None:
            thinking = True
        self.effort.check(reasoning_effort)
        return bool(thinking), reasoning_effort

    @property
    def forbidden_in_text(self) -> tuple[str, ...]:
        """Strings that never belong in reasoning or content (the official parser rejects them there)."""
        return (self.bos, self.eos, self.think_open, self.think_close, self.dsml)


V4 = ChatFormat(name="V4", effort=NamedEffort({"high": "", "max": ABSOLUTE_MAXIMUM_TEXT}))
V4_FLASH_0731 = ChatFormat(
    name="V4-Flash-0731",
    effort=NamedEffort({"low": "", "high": ABSOLUTE_MAXIMUM_TEXT, "max": BEYOND_MAXIMUM_TEXT}),
    default_thinking=True, default_effort="high")   # vLLM 0.32's served default (golden README section 7)
V4_1 = ChatFormat(
    name="V4.1",
    # low=50, high=75, xhigh=75, max=100, default 75: golden encode_v41 (model_spec 6.2b; 6.3's older table loses)
    effort=NumericEffort(names={"low": 50, "high": 75, "xhigh": 75, "max": 100}, default=75),
    block_tag=" calls", invoke_tag=" invoke", parameter_tag=" parameter", system_token="<｜System｜>",
    wrap_dict_arguments=False)

FORMATS: Mapping[str, ChatFormat] = MappingProxyType({f.name: f for f in (V4, V4_FLASH_0731, V4_1)})

V4_ARCHITECTURE = "DeepseekV4ForCausalLM"
V41_ARCHITECTURE = "DeepseekV41ForCausalLM"


def format_for_model(architecture: str, has_dspark: bool = False) -> ChatFormat:
    """The chat format of a checkpoint: ``DeepseekV41ForCausalLM`` -> V4.1; ``DeepseekV4ForCausalLM`` with
    ``dspark_*`` keys in config.json -> V4-Flash-0731; without -> V4."""
    if architecture == V41_ARCHITECTURE:
        return V4_1
    if architecture == V4_ARCHITECTURE:
        return V4_FLASH_0731 if has_dspark else V4
    raise ChatInputError("architectures", architecture, f"{V4_ARCHITECTURE!r} or {V41_ARCHITECTURE!r}")


def format_for_config(config: Mapping[str, Any]) -> ChatFormat:
    """:func:`format_for_model` from a raw ``config.json`` dict (first known architecture; DSpark keys)."""
    archs = config.get("architectures") or [V4_ARCHITECTURE]
    known = [a for a in archs if a in (V4_ARCHITECTURE, V41_ARCHITECTURE)]
    has_dspark = any(str(k).startswith("dspark_") for k in config)
    return format_for_model(known[0] if known else archs[0], has_dspark)


def format_by_name(name: str) -> ChatFormat:
    """``"V4"``, ``"V4-Flash-0731"`` or ``"V4.1"`` (case-insensitive; ``v4-0731`` and ``v41`` also work)."""
    aliases = {"v4": V4, "v4-flash-0731": V4_FLASH_0731, "v4-0731": V4_FLASH_0731, "0731": V4_FLASH_0731,
               "v4.1": V4_1, "v41": V4_1}
    fmt = aliases.get(str(name).lower())
    if fmt is None:
        raise ChatInputError("format", name, "one of " + ", ".join(repr(n) for n in FORMATS))
    return fmt
