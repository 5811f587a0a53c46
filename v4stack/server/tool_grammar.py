"""A Lark grammar (llguidance dialect) for a DSML tool-call block, used for ``tool_choice: "required"`` and a
named function: the answer is exactly one tool block calling the allowed function(s), with every parameter
the function's JSON schema lists (required ones always, optional ones optionally), in schema order.

Layout (docs/chat.md, DSML)::

    \\n\\n<｜DSML｜tool_calls>\\n<｜DSML｜invoke name="F">\\n<｜DSML｜parameter name="K" string="true">RAW</｜DSML｜parameter>
    \\n</｜DSML｜invoke>\\n</｜DSML｜tool_calls>

``｜DSML｜`` is one special token, referenced by id (``<[ID]>``); everything else is ordinary text. A string
parameter is written raw with ``string="true"`` (no ``<`` inside, up to ``maxLength`` characters when the
schema gives one); any other parameter is JSON constrained by its own schema (``%json``) with
``string="false"``, as the encoder writes them.
"""

from __future__ import annotations

import json
from typing import Any

from v4stack.chat import ChatFormat


def _lit(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _is_plain_string(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "string" and not ({"enum", "const", "pattern",
                                                                                 "format"} & set(schema))


def tool_call_grammar(fmt: ChatFormat, dsml_id: int, functions: list[dict], allow_many: bool) -> str:
    """Lark text for a block of one call (``allow_many``: one or more) to any of ``functions`` (OpenAI
    ``function`` objects: name, parameters)."""
    dsml = f"<[{dsml_id}]>"
    rules = []
    names = []
    for i, fn in enumerate(functions):
        rule = f"call_{i}"
        names.append(rule)
        params = (fn.get("parameters") or {})
        props = params.get("properties") or {}
        required = set(params.get("required") or ())
        items = []
        for j, (key, schema) in enumerate(props.items()):
            value_rule = f"value_{i}_{j}"
            if _is_plain_string(schema):
                limit = schema.get("maxLength")
                bound = f"{{0,{int(limit)}}}" if isinstance(limit, int) and limit >= 0 else "*"
                rules.append(f"{value_rule}: /[^<]{bound}/")
                flag = "true"
            else:
                rules.append(f"{value_rule}: %json {json.dumps(schema if isinstance(schema, dict) else {})}")
                flag = "false"
            open_tag = f'{fmt.parameter_tag} name="{key}" string="{flag}">'
            close_tag = _lit(fmt.parameter_tag + ">")
            item = f'"<" {dsml} {_lit(open_tag)} {value_rule} "</" {dsml} {close_tag} "\\n"'
            items.append(item if key in required else f"({item})?")
        body = " ".join(items) if items else '"\\n"'
        if items and not required:  # all optional: an empty invoke still has its one empty line
            body = f'({body} | "\\n")'
        invoke_open, invoke_close = _lit(f'{fmt.invoke_tag} name="{fn["name"]}">' + "\n"), _lit(fmt.invoke_tag + ">")
        rules.append(f'{rule}: "<" {dsml} {invoke_open} {body} "</" {dsml} {invoke_close}')
    call = " | ".join(names)
    calls = f'call ("\\n" call)*' if allow_many else "call"
    block_open, block_close = _lit(fmt.block_tag + ">\n"), _lit(fmt.block_tag + ">")
    head = f'start: "\\n\\n<" {dsml} {block_open} {calls} "\\n</" {dsml} {block_close}'
    return "\n".join([head, f"call: {call}", *rules]) + "\n"
