"""Next-token log-probabilities (LLM.next_token_logprobs): the candidate/variant rule, the hf backend
against a hand computation on a tiny random Llama, the vllm request/readout helpers on fake outputs shaped
like vLLM's, the openai backend against a fake server, and (slow) vllm itself when importable."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from rucai.errors import UserError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from rucai import llm as rllm  # noqa: E402
from rucai.llm.base import (  # noqa: E402
    LLM,
    RequestOutput,
    candidate_token_ids,
    candidate_variants,
    logsumexp,
)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg.strip(), repr(msg)
    return msg


@pytest.fixture(scope="module")
def tiny(tiny_hf_llm):
    return tiny_hf_llm


def hand_logprobs(m, prompt) -> list[float]:
    """log_softmax of the last position's logits, one unpadded prompt through the model's own forward."""
    import torch

    ids = m.encode(prompt)
    with torch.no_grad():
        logits = m.model(input_ids=torch.tensor([ids])).logits[0, -1].double()
    return torch.log_softmax(logits, -1).tolist()


# ---- the rule --------------------------------------------------------------------------------------------

def test_candidate_variants_rule():
    assert candidate_variants("Yes") == ("Yes", " Yes")
    assert candidate_variants(" Yes") == (" Yes", "Yes")
    assert candidate_variants(" ") == (" ",)
    # first token WITHOUT special tokens per variant; a token shared by both variants counts once
    enc = {"Yes": [7, 8], " Yes": [9], "No": [5], " No": [5, 1], "Ab": [], " Ab": [3]}.__getitem__
    assert candidate_token_ids(enc, ["Yes", "No", "Ab"]) == [(7, 9), (5,), (3,)]
    with pytest.raises(UserError) as e:
        candidate_token_ids(lambda s: [], ["Q"])
    assert "'Q'" in one_line(e)


def test_logsumexp():
    assert logsumexp([]) == -math.inf and logsumexp([-math.inf, -math.inf]) == -math.inf
    assert logsumexp([math.log(0.2), math.log(0.3)]) == pytest.approx(math.log(0.5), abs=1e-12)
    assert logsumexp([-1000.0, -1000.0]) == pytest.approx(-1000.0 + math.log(2))
    assert logsumexp([-2.0, -math.inf]) == -2.0


# ---- input validation and the base hook -------------------------------------------------------------------

class _NoScores(LLM):
    backend = "noscore"

    def _generate(self, prompts, sampling):
        return [RequestOutput(index=i, prompt_tokens=0) for i in range(len(prompts))]


def test_backend_without_hook_is_one_line():
    with pytest.raises(UserError) as e:
        _NoScores().next_token_logprobs(["p"], ["Yes"])
    assert "llm backend noscore has no next-token log-probabilities" in one_line(e)


@pytest.mark.parametrize("cands,needle", [([], "at least one candidate"), ("Yes", "list of strings"),
                                          (["Yes", ""], "non-empty"), ([3], "non-empty")])
def test_bad_candidates_are_one_line(cands, needle):
    with pytest.raises(UserError) as e:
        _NoScores().next_token_logprobs(["p"], cands)
    assert needle in one_line(e)


def test_no_prompts_give_no_results(tiny):
    assert tiny.next_token_logprobs([], ["Yes"]) == []


# ---- hf backend --------------------------------------------------------------------------------------------

def test_hf_matches_hand_forward_with_left_padding(tiny):
    """Two prompts of different lengths in one batch (the short one is left-padded); the char tokenizer
    maps "Yes" to 'Y' and " Yes" to ' ', so "Yes" = logsumexp(lp['Y'], lp[' ']) and " " = lp[' ']."""
    tok = tiny.tokenizer
    prompts = ["a much longer prompt than the other one", "hi"]
    cands = ["Yes", "No", " "]
    tiny.batch_size = 4
    got = tiny.next_token_logprobs(prompts, cands)
    y, n, sp = (tok(c, add_special_tokens=False)["input_ids"][0] for c in ("Y", "N", " "))
    assert len({y, n, sp}) == 3
    for p, g in zip(prompts, got, strict=True):
        lp = hand_logprobs(tiny, p)
        assert set(g) == set(cands)
        assert g["Yes"] == pytest.approx(logsumexp([lp[y], lp[sp]]), abs=1e-5)
        assert g["No"] == pytest.approx(logsumexp([lp[n], lp[sp]]), abs=1e-5)
        assert g[" "] == pytest.approx(lp[sp], abs=1e-5)  # one distinct token: not counted twice
        assert g["Yes"] > lp[y] and g["Yes"] > lp[sp]
    assert got[0]["Yes"] != pytest.approx(got[1]["Yes"], abs=1e-4), "prompts should score differently"
    tiny.batch_size = 1
    single = tiny.next_token_logprobs(prompts, cands)
    tiny.batch_size = 4
    for a, b in zip(got, single, strict=True):
        assert a == pytest.approx(b, abs=1e-5)


def test_hf_shared_prefix_runs_once_and_matches_hand_forward(tiny, monkeypatch):
    """Scoring prompts that share a long dialogue prefix (chat messages, as the GRSU simulator's) run the
    prefix once and only their own suffixes on its cache; each row equals its own unpadded forward,
    including a row whose whole prompt is the others' prefix plus one token."""
    import rucai.llm.hf as hf

    dialogue = "User: I like old space movies with good music and a slow pace.\nSystem: Try these."
    prompts = [[{"role": "user", "content": dialogue + q}] for q in ("A)?", "Blade Runner (1982)?", "Alien)?")]
    prompts.append(dialogue)  # a raw string: a different start, so it cannot share the chat prefix
    calls = []
    real = hf.HFLLM._last_logits_shared_prefix
    monkeypatch.setattr(hf.HFLLM, "_last_logits_shared_prefix",
                        lambda self, batch, shared: calls.append((len(batch), shared)) or real(self, batch, shared))
    tiny.batch_size = 3  # longest first: the three chat prompts share one batch, the string its own
    got = tiny.next_token_logprobs(prompts, ["Yes", "No"])
    tiny.batch_size = 4
    assert len(calls) == 1 and calls[0][0] == 3 and calls[0][1] >= hf.PREFIX_MIN_TOKENS
    y, n, sp = (tiny.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in ("Y", "N", " "))
    for p, g in zip(prompts, got, strict=True):
        lp = hand_logprobs(tiny, p)
        assert g["Yes"] == pytest.approx(logsumexp([lp[y], lp[sp]]), abs=1e-5)
        assert g["No"] == pytest.approx(logsumexp([lp[n], lp[sp]]), abs=1e-5)
    assert hf._common_prefix_len([[1, 2, 3], [1, 2, 4], [1, 2]], cap=1) == 1
    assert hf._common_prefix_len([[1, 2, 3], [1, 2, 4]], cap=5) == 2


def test_hf_chat_prompt_ends_at_the_assistant_header(tiny):
    chat = [{"role": "user", "content": "is it?"}]
    g = tiny.next_token_logprobs(chat, ["Yes"])  # a single chat prompt
    ids = tiny.encode(chat)
    assert tiny.tokenizer.decode(ids).endswith("<|assistant|>")
    lp = hand_logprobs(tiny, chat)
    y, sp = (tiny.tokenizer(c, add_special_tokens=False)["input_ids"][0] for c in ("Y", " "))
    assert len(g) == 1 and g[0]["Yes"] == pytest.approx(logsumexp([lp[y], lp[sp]]), abs=1e-5)


# ---- vllm helpers on fake outputs (attribute names as in vLLM's RequestOutput / Logprob) ---------------------

def test_vllm_scoring_requests_and_readout():
    from rucai.llm.vllm import read_prompt_logprobs, scoring_requests

    inputs, keys = scoring_requests([[1, 2, 3], [4]], [(10, 11), (12,), (10,)])
    assert keys == [(0, 10), (0, 11), (0, 12), (1, 10), (1, 11), (1, 12)]
    assert inputs[0] == {"prompt_token_ids": [1, 2, 3, 10]} and inputs[5] == {"prompt_token_ids": [4, 12]}

    def fake_output(req):
        ids = req["prompt_token_ids"]
        plp = [None] + [{t: SimpleNamespace(logprob=-0.1 * t - len(ids), rank=1, decoded_token=None)}
                        for t in ids[1:]]
        return SimpleNamespace(prompt_token_ids=ids, prompt_logprobs=plp, outputs=[])

    table = read_prompt_logprobs([fake_output(r) for r in inputs], keys)
    assert table[(0, 11)] == pytest.approx(-1.1 - 4) and table[(1, 12)] == pytest.approx(-1.2 - 2)
    with pytest.raises(UserError) as e:
        read_prompt_logprobs([SimpleNamespace(prompt_logprobs=None)], [(0, 10)])
    one_line(e)
    with pytest.raises(UserError):
        scoring_requests([[]], [(1,)])


@pytest.mark.slow
def test_vllm_matches_hf_on_the_tiny_model(tmp_path):
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not importable here")
    import torch

    from rucai.llm.hf import HFLLM
    from rucai.llm.models import save_tiny_causal_lm

    folder = save_tiny_causal_lm(tmp_path / "tiny")
    prompts = ["a much longer prompt", "hi", [{"role": "user", "content": "is it?"}]]
    want = HFLLM(str(folder), device="cpu", dtype="float32").next_token_logprobs(prompts, ["Yes", "No"])
    m = rllm.build({"backend": "vllm", "model": str(folder), "dtype": "float32", "enforce_eager": True,
                    "allow_cpu": not torch.cuda.is_available(), "gpu_memory_utilization": 0.3,
                    "use_tqdm": False})
    try:
        got = m.next_token_logprobs(prompts, ["Yes", "No"])
    finally:
        m.close()
    for a, b in zip(got, want, strict=True):
        assert a == pytest.approx(b, abs=1e-3)


# ---- openai backend against a fake server --------------------------------------------------------------------

TOP = {"Yes": -0.5, " Yes": -2.0, "No": -1.5, "Maybe": -3.0}


class _FakeLogprobs(BaseHTTPRequestHandler):
    calls: list = []

    def log_message(self, *a):
        pass

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append((self.path, req))
        shift = -1.0 if "second" in json.dumps(req.get("prompt") or req.get("messages")) else 0.0
        usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        if self.path.endswith("/chat/completions"):
            tops = [{"token": t, "logprob": v + shift, "bytes": None} for t, v in TOP.items()]
            lp = {"content": [{"token": "Yes", "logprob": -0.5 + shift, "bytes": None, "top_logprobs": tops}]}
            choice = {"index": 0, "finish_reason": "length", "logprobs": lp,
                      "message": {"role": "assistant", "content": "Yes"}}
            obj = "chat.completion"
        else:
            lp = {"tokens": ["Yes"], "token_logprobs": [-0.5 + shift], "text_offset": [0],
                  "top_logprobs": [{t: v + shift for t, v in TOP.items()}]}
            choice = {"index": 0, "finish_reason": "length", "text": "Yes", "logprobs": lp}
            obj = "text_completion"
        self._send({"id": "x", "object": obj, "created": 0, "model": req["model"], "choices": [choice],
                    "usage": usage})


@pytest.fixture
def logprob_server():
    _FakeLogprobs.calls = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _FakeLogprobs)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_openai_reads_top_logprobs(logprob_server):
    m = rllm.build({"backend": "openai", "model": "fake", "base_url": logprob_server, "max_concurrency": 2})
    prompts = ["first raw", [{"role": "user", "content": "second chat"}]]
    got = m.next_token_logprobs(prompts, ["Yes", "No", "Absent"])
    for g, shift in zip(got, (0.0, -1.0), strict=True):
        assert g["Yes"] == pytest.approx(logsumexp([-0.5 + shift, -2.0 + shift]), abs=1e-9)
        assert g["No"] == pytest.approx(-1.5 + shift, abs=1e-9)
        assert g["Absent"] == -math.inf
    reqs = dict(_FakeLogprobs.calls)
    comp, chat = reqs["/v1/completions"], reqs["/v1/chat/completions"]
    assert comp["max_tokens"] == 1 and comp["logprobs"] == 20 and comp["temperature"] == 0
    assert chat["max_tokens"] == 1 and chat["logprobs"] is True and chat["top_logprobs"] == 20


def test_openai_without_logprobs_is_one_line():
    from rucai.llm.openai import candidate_scores, top_logprobs_of

    resp = SimpleNamespace(choices=[SimpleNamespace(logprobs=None)])
    for chat in (True, False):
        with pytest.raises(UserError) as e:
            top_logprobs_of(resp, chat=chat)
        one_line(e)
    assert candidate_scores({" No": -1.0}, ["No", " Yes"]) == {"No": -1.0, " Yes": -math.inf}
