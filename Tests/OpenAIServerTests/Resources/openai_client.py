"""Drives an `lmcache serve` endpoint with the official `openai` package; exits non-zero on a failure.

Usage: python3 openai_client.py BASE_URL   (e.g. http://127.0.0.1:8000/v1)
"""

import sys

import openai


def main() -> None:
    client = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0, timeout=600)

    models = client.models.list()
    model = models.data[0].id

    completion = client.completions.create(model=model, prompt="The capital of France is", max_tokens=6, temperature=0)
    text = completion.choices[0].text
    assert text, completion
    assert completion.usage.prompt_tokens > 0, completion.usage
    assert completion.usage.completion_tokens > 0, completion.usage

    streamed = "".join(
        chunk.choices[0].text
        for chunk in client.completions.create(
            model=model, prompt="The capital of France is", max_tokens=6, temperature=0, stream=True
        )
        if chunk.choices
    )
    assert streamed == text, (streamed, text)

    messages = [{"role": "user", "content": "Say hello."}]
    chat = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
    reply = chat.choices[0].message.content
    assert chat.choices[0].message.role == "assistant", chat
    assert reply, chat

    pieces = []
    usage = None
    for chunk in client.chat.completions.create(
        model=model, messages=messages, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True}
    ):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
    assert "".join(pieces) == reply, (pieces, reply)
    assert usage is not None and usage.completion_tokens > 0, usage

    try:
        client.completions.create(model=model, prompt="Hi", max_tokens=2, n=2)
    except openai.BadRequestError as error:
        assert error.status_code == 400
    else:
        raise AssertionError("n=2 was accepted")

    print("openai client: completions, streaming, chat and errors all passed")


if __name__ == "__main__":
    main()
