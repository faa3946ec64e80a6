#!/usr/bin/env python3
"""Renders every template of templates.json on every conversation of conversations.json with
Python's jinja2 as transformers' apply_chat_template sets it up (ImmutableSandboxedEnvironment,
trim_blocks and lstrip_blocks, loop controls, raise_exception, strftime_now, transformers' tojson,
tools=None and documents=None, the special tokens) and writes renderings.json, which
chat_test.go compares with the Go renderings character for character; likewise the tojson
templates of tojson.json into tojson_renderings.json.

Run from this directory: python3 render.py (Debian: apt-get install python3-jinja2)."""
import json
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


# A fixed clock, which chat_test.go sets too, so that renderings do not depend on the day.
NOW = datetime(2026, 12, 6, 14, 30, 5)


def strftime_now(format):
    return NOW.strftime(format)


class AssistantTracker(Extension):
    """transformers' {% generation %} block: renders its body (transformers also records where
    it falls, for assistant masks)."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now

templates = json.load(open("templates.json"))
conversations = json.load(open("conversations.json"))
out = []
for ti, t in enumerate(templates):
    compiled = env.from_string(t["template"])
    for ci, conv in enumerate(conversations):
        for gen in (True, False):
            r = {"template": ti, "conversation": ci, "add_generation_prompt": gen}
            try:
                r["text"] = compiled.render(messages=conv, tools=None, documents=None, add_generation_prompt=gen, **SPECIAL)
            except jinja2.exceptions.TemplateError as e:
                r["error"] = str(e)
            out.append(r)
    # continue_final_message on conversations ending with an assistant turn, cut as transformers'
    # apply_chat_template cuts the rendering after the final message.
    for ci, conv in enumerate(conversations):
        if conv[-1]["role"] != "assistant":
            continue
        r = {"template": ti, "conversation": ci, "continue_final_message": True}
        try:
            rendered = compiled.render(messages=conv, tools=None, documents=None, add_generation_prompt=False, **SPECIAL)
            final = conv[-1]["content"]
            if final.strip() not in rendered:
                raise ValueError("the final message does not appear in the chat")
            loc = rendered.rindex(final.strip())
            if rendered[loc : loc + len(final.lstrip())] == final:
                r["text"] = rendered[: loc + len(final.lstrip())]
            else:
                r["text"] = rendered[: loc + len(final.strip())]
        except (jinja2.exceptions.TemplateError, ValueError) as e:
            r["error"] = str(e)
        out.append(r)
json.dump(out, open("renderings.json", "w"), indent=1, ensure_ascii=False)
print(len(out), "renderings,", sum("error" in r for r in out), "raised")

# tojson with transformers' arguments (tojson.json), on every conversation.
out = []
for ti, t in enumerate(json.load(open("tojson.json"))):
    compiled = env.from_string(t)
    for ci, conv in enumerate(conversations):
        out.append({"template": ti, "conversation": ci, "text": compiled.render(messages=conv, **SPECIAL)})
json.dump(out, open("tojson_renderings.json", "w"), indent=1, ensure_ascii=False)
print(len(out), "tojson renderings")
