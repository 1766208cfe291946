#!/usr/bin/env python3
"""Talks to `panacea serve` through the official `openai` Python client (PyPI `openai`).

Usage: openai_client.py BASE_URL   (e.g. http://127.0.0.1:8000/v1)

Does a non-streamed and a streamed greedy chat with the Panacea-specific `preference` field
passed through `extra_body` (by objective name, then as a list), lists the models, and sends a
malformed preference. Prints one JSON object with what it saw; the Rust test
`protocol::the_openai_python_client_chats_plain_and_streamed_with_a_preference` checks it.
"""

import json
import sys

import openai
from openai import OpenAI


def main() -> int:
    client = OpenAI(base_url=sys.argv[1], api_key="not-needed")
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    plain = client.chat.completions.create(
        model="panacea",
        messages=messages,
        temperature=0,
        max_tokens=12,
        extra_body={"preference": {"helpful": 0.3, "harmless": 0.7}},
    )
    parts, finish = [], None
    stream = client.chat.completions.create(
        model="panacea",
        messages=messages,
        temperature=0,
        max_tokens=12,
        stream=True,
        extra_body={"preference": [0.3, 0.7]},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    bad_status, bad_message = None, None
    try:
        client.chat.completions.create(
            model="panacea",
            messages=messages,
            max_tokens=4,
            extra_body={"preference": {"helpfull": 1.0}},
        )
    except openai.BadRequestError as e:
        bad_status = e.status_code
        bad_message = str(e)
    print(
        json.dumps(
            {
                "plain": plain.choices[0].message.content,
                "plain_finish": plain.choices[0].finish_reason,
                "streamed": "".join(parts),
                "streamed_finish": finish,
                "completion_tokens": plain.usage.completion_tokens,
                "models": [m.id for m in client.models.list().data],
                "bad_status": bad_status,
                "bad_message": bad_message,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
