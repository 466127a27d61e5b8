"""The OpenAI-compatible server (``tunelab.serve``) through the official ``openai`` client, over a tiny
model built in code; and the continuous-batching engine behind it (rows with their own settings)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from tunelab.generate.base import GenerationConfig, encode_prompt
from tunelab.generate.engine import DecodeEngine
from tunelab.generate.hf import HFGenerator
from tunelab.models.tiny import tiny_model, tiny_tokenizer
from tunelab.serve import running_server

MODEL = "tiny"
PROMPTS = [
    "The quick brown fox",
    "numbers 1 2 3 4 5 6 7",
    "x",
    "a somewhat longer prompt than the others, to pad the batch",
    "hello there",
    "def f(x):",
    "Q: 2+2? A:",
    "zzz",
]


@pytest.fixture(scope="module")
def gen() -> HFGenerator:
    tok = tiny_tokenizer()
    return HFGenerator(tiny_model(len(tok), seed=0), tok, batch_size=8, progress=False)


@pytest.fixture(scope="module")
def server(gen: HFGenerator):
    with running_server(gen, model_name=MODEL) as s:
        yield s


def make_client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return make_client(server)


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def http(url: str, data: bytes | None = None) -> tuple[int, str]:
    """(status, body) of a raw request (for what the openai client cannot send)."""
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# ----------------------------------------------------------------------------- happy paths


def test_models_and_health(server, client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    status, body = http(f"{server.url}/health")
    assert status == 200 and json.loads(body)["status"] == "ok" and json.loads(body)["batching"] is True


def test_chat_completion_is_the_models_greedy_text(gen: HFGenerator, client: openai.OpenAI) -> None:
    messages = chat("hello")
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
    (choice,) = r.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == gen.generate([messages], GenerationConfig(max_new_tokens=12))[0][0]
    assert choice.finish_reason == "length" and r.object == "chat.completion" and r.model == MODEL
    assert r.usage.prompt_tokens == len(encode_prompt(gen.tok, messages))
    assert r.usage.completion_tokens == 12 and r.usage.total_tokens == r.usage.prompt_tokens + 12


def test_text_completion_several_prompts(gen: HFGenerator, client: openai.OpenAI) -> None:
    prompts = PROMPTS[:2]
    r = client.completions.create(model=MODEL, prompt=prompts, max_tokens=8, temperature=0)
    expected = [t[0] for t in gen.generate(prompts, GenerationConfig(max_new_tokens=8))]
    assert [c.index for c in r.choices] == [0, 1] and [c.text for c in r.choices] == expected
    assert r.usage.prompt_tokens == sum(len(encode_prompt(gen.tok, p)) for p in prompts)
    assert r.usage.completion_tokens == 16


def test_streamed_chat_equals_the_whole_response(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = dict(model=MODEL, messages=chat(PROMPTS[0]), max_tokens=16, temperature=0)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == whole.choices[0].message.content and len(with_choices) > 3  # streamed in pieces
    assert with_choices[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_n_samples_with_a_seed(client: openai.OpenAI) -> None:
    def sample(n: int, seed: int, stream: bool = False) -> list[str]:
        kwargs = dict(model=MODEL, prompt=PROMPTS[1], max_tokens=10, temperature=1.0, n=n, seed=seed)
        if not stream:
            return [c.text for c in sorted(client.completions.create(**kwargs).choices, key=lambda c: c.index)]
        texts = [""] * n
        for chunk in client.completions.create(**kwargs, stream=True):
            for c in chunk.choices:
                texts[c.index] += c.text
        return texts

    three = sample(3, seed=5)
    assert len(three) == 3 and len(set(three)) == 3  # a random model's samples differ
    assert sample(3, seed=5) == three  # seeded
    assert sample(3, seed=5, stream=True) == three
    assert sample(1, seed=5) == three[:1]  # a sample depends on its seed, not on its siblings
    assert sample(3, seed=6) != three


def test_stop_strings(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = dict(model=MODEL, prompt=PROMPTS[3], max_tokens=24, temperature=0)
    free = client.completions.create(**kwargs).choices[0].text
    stop = free[6:9]
    cut = free[: free.find(stop)]
    for stops in (stop, [stop, "never-appears"]):
        r = client.completions.create(**kwargs, stop=stops)
        assert r.choices[0].text == cut and r.choices[0].finish_reason == "stop"
    pieces = [c.choices[0].text for c in client.completions.create(**kwargs, stop=[stop], stream=True)]
    assert "".join(pieces) == cut and all(stop not in p for p in pieces)


def test_concurrent_requests_decode_together(gen: HFGenerator) -> None:
    """8 requests sent at once (each with its own settings) answer what they answer alone, in one batch."""
    greedy = [dict(max_tokens=6 + 2 * i, temperature=0.0) for i in range(8)]
    sampled = {0: dict(max_tokens=10, temperature=0.8, top_p=0.9, seed=0), 4: dict(max_tokens=9, temperature=1.2, seed=4)}
    settings = [sampled.get(i, greedy[i]) for i in range(8)]
    settings[3]["stop"] = ["e"]

    def ask(client: openai.OpenAI, i: int) -> str:
        return client.completions.create(model=MODEL, prompt=PROMPTS[i], **settings[i]).choices[0].text

    with running_server(gen, model_name=MODEL) as server:
        client = make_client(server)
        alone = [ask(client, i) for i in range(8)]
        assert server.loop.max_rows == 1
        with ThreadPoolExecutor(8) as pool, server.loop.paused():
            futures = [pool.submit(ask, client, i) for i in range(8)]
            deadline = time.monotonic() + 20
            while server.loop.queued < 8 and time.monotonic() < deadline:
                time.sleep(0.01)
        together = [f.result() for f in futures]
        assert together == alone
        assert server.loop.max_rows == 8 and server.requests_served == 16


def test_any_generator_gets_the_requests_that_arrive_together_in_one_call() -> None:
    """A generator without an engine (the OpenAI and vLLM backends) is called once for the requests that
    arrived together with the same settings (greedy ones whatever their seeds), so a backend that batches
    gets a batch; never concurrently."""

    class Echo:
        fingerprint = "echo"

        def __init__(self) -> None:
            self.calls: list[int] = []
            self.busy = threading.Lock()

        def generate(self, prompts: list, cfg: GenerationConfig) -> list[list[str]]:
            assert self.busy.acquire(blocking=False), "called concurrently"
            try:
                self.calls.append(len(prompts))
                time.sleep(0.01)
                texts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
                return [[f"{t}!{i}" for i in range(cfg.n)] for t in texts]
            finally:
                self.busy.release()

    echo = Echo()
    with running_server(echo, model_name="echo") as server:
        client = make_client(server)
        r = client.chat.completions.create(model="echo", messages=chat("hi"), n=2)
        assert [c.message.content for c in r.choices] == ["hi!0", "hi!1"]
        streamed = client.completions.create(model="echo", prompt="yo", stream=True)
        assert "".join(c.choices[0].text for c in streamed if c.choices) == "yo!0"
        assert echo.calls == [1, 1]
        with ThreadPoolExecutor(5) as pool:
            with server.loop.paused():  # four requests arrive together: one call; a fifth with other settings: its own
                futures = [pool.submit(lambda p: client.completions.create(model="echo", prompt=p, temperature=0)
                                       .choices[0].text, p)
                           for p in ["a", "b", "c", "d"]]
                odd = pool.submit(lambda: client.completions.create(model="echo", prompt="e", max_tokens=3,
                                                                  temperature=0).choices[0].text)
                deadline = time.time() + 10
                while server.loop.queued < 5 and time.time() < deadline:
                    time.sleep(0.01)
        assert [f.result() for f in futures] == ["a!0", "b!0", "c!0", "d!0"] and odd.result() == "e!0"
        assert sorted(echo.calls[2:]) == [1, 4] and server.loop.max_rows == 4 and not server.loop.batching


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "body",
    [
        {"model": MODEL},  # no messages
        {"model": MODEL, "messages": []},
        {"model": MODEL, "messages": "hello"},
        {"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]},
        {"model": MODEL, "messages": chat("hi"), "max_tokens": -1},
        {"model": MODEL, "messages": chat("hi"), "n": 0},
        {"model": MODEL, "messages": chat("hi"), "temperature": 2.5},
        {"model": MODEL, "messages": chat("hi"), "temperature": -0.1},
        {"model": MODEL, "messages": chat("hi"), "top_p": 0},
        {"model": "gpt-17", "messages": chat("hi")},
    ],
)
def test_bad_chat_requests_are_400(client: openai.OpenAI, body: dict) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.post("/chat/completions", body=body, cast_to=object)
    error = info.value.body
    assert error["type"] == "invalid_request_error" and error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_bad_completion_requests_are_400(client: openai.OpenAI) -> None:
    for body in ({"model": MODEL}, {"model": MODEL, "prompt": []}, {"model": MODEL, "prompt": 3}):
        with pytest.raises(openai.BadRequestError):
            client.post("/completions", body=body, cast_to=object)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model=MODEL, prompt="x", max_tokens=-5)


def test_malformed_json_and_unknown_routes(server) -> None:
    status, body = http(f"{server.url}/v1/chat/completions", data=b'{"messages": [')
    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"
    status, body = http(f"{server.url}/v1/nothing-here")
    assert status == 404 and "nothing-here" in json.loads(body)["error"]["message"]


def test_internal_error_is_500_without_traceback() -> None:
    class Broken:
        fingerprint = "broken"

        def generate(self, prompts: list, cfg: GenerationConfig) -> list[list[str]]:
            raise RuntimeError("the GPU caught fire")

    with running_server(Broken(), model_name="broken") as server:
        with pytest.raises(openai.InternalServerError) as info:
            make_client(server).chat.completions.create(model="broken", messages=chat("hi"))
        assert info.value.status_code == 500 and "caught fire" in info.value.body["message"]
        status, body = http(f"{server.url}/v1/completions", data=json.dumps({"prompt": "x"}).encode())
        assert status == 500 and json.loads(body)["error"]["type"] == "server_error"
        assert "Traceback" not in body and 'File "' not in body


# ----------------------------------------------------------------------------- the engine itself


def test_engine_rows_carry_their_own_settings(gen: HFGenerator) -> None:
    """Requests with different settings decode in one batch as they would alone; streams hold stops back."""
    free = gen.generate([PROMPTS[0]], GenerationConfig(max_new_tokens=20))[0][0]
    cfgs = [
        GenerationConfig(max_new_tokens=5),
        GenerationConfig(max_new_tokens=20, stop=[free[8:10]]),
        GenerationConfig(max_new_tokens=9, temperature=0.7, top_p=0.8, seed=3, n=2),
        GenerationConfig(max_new_tokens=0),
    ]
    prompts = [PROMPTS[0], PROMPTS[0], PROMPTS[2], PROMPTS[4]]
    ids = [encode_prompt(gen.tok, p) for p in prompts]
    alone = [gen.generate([p], c)[0] for p, c in zip(prompts, cfgs)]
    engine = DecodeEngine(gen)
    streamed: dict[int, str] = {}
    done: list[str | None] = []

    def on_text(sample: int, delta: str, reason: str | None) -> None:
        streamed[sample] = streamed.get(sample, "") + delta
        assert cfgs[1].stop[0] not in streamed[sample]
        done.append(reason)

    reqs = [engine.submit(i, c, on_text=on_text if k == 1 else None) for k, (i, c) in enumerate(zip(ids, cfgs))]
    while engine.busy:
        engine.step()
    assert [r.texts for r in reqs] == alone and engine.max_rows == 4  # 1 + 1 + 2 rows; max_new_tokens 0 never runs
    assert streamed[0] == alone[1][0] == free[: free.find(cfgs[1].stop[0])] and done[-1] == "stop"
    assert [r.finish_reasons for r in reqs] == [["length"], ["stop"], ["length", "length"], ["length"]]
    assert [reqs[0].completion_tokens, reqs[2].completion_tokens, reqs[3].completion_tokens] == [5, 18, 0]


def test_requests_share_a_call_when_only_a_greedy_seed_differs() -> None:
    from tunelab.generate.batching import _same_call

    greedy = GenerationConfig(max_new_tokens=8, temperature=0.0, seed=1)
    assert _same_call(greedy, GenerationConfig(max_new_tokens=8, temperature=0.0, seed=2))
    assert not _same_call(greedy, GenerationConfig(max_new_tokens=9, temperature=0.0, seed=1))
    sampled = GenerationConfig(max_new_tokens=8, temperature=0.7, seed=1)
    assert _same_call(sampled, GenerationConfig(max_new_tokens=8, temperature=0.7, seed=1))
    assert not _same_call(sampled, GenerationConfig(max_new_tokens=8, temperature=0.7, seed=2))  # its own draws
