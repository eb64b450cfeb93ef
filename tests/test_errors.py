"""Bad input ends in one readable line and a non-zero exit, never a traceback."""

import pytest

from tests.conftest import run_cli


@pytest.mark.parametrize("args,expect", [
    (["experiment=does/not_exist"], "unknown experiment='does/not_exist'; closest valid names:"),
    (["hardware=cpuu"], "unknown hardware='cpuu'; closest valid names: cpu"),
    (["trainer.max_epoch=3"], "Could not override 'trainer.max_epoch'"),
    (["seed=abc"], "could not be converted to Integer"),
    (["task=trian"], "unknown task='trian'; closest valid names: train"),
    (["hardware=deepspeed_stage_3"], "hardware=deepspeed_stage_3 needs CUDA GPUs; none visible"),
    (["experiment=sasrec/office", "data.dir=/definitely/missing"], "data.dir=/definitely/missing does not exist"),
    (["-m", "model.hidden_size=32,64", "model.hiden_size=3"], "Could not override 'model.hiden_size'"),
    (["experiment=olymmath/qwq_32b", "hardware=cpu"], "llm=vllm needs a CUDA GPU"),
    (["experiment=olymmath/smollm2", "paths.data_dir=/nowhere"], "benchmark data /nowhere/olymmath/OlymMATH-EN-EASY.jsonl not found"),
    (["cluster=slurm"], "add -m"),
    (["-m", "cluster=slurm", "hardware=deepspeed_stage_2"],  # devices=auto: SLURM needs a number
     "cluster=slurm needs hardware.devices=<GPUs per node> (an integer >= 1), not 'auto'"),
    (["-m", "cluster=slurm", "hardware=vllm", "hardware.devices=0"], "hardware.devices=<GPUs per node>"),
    (["experiment=grsu/redial_cpu", "method.search.beams=0"], "method.search.beams=0 must be a number >= 1"),
    (["experiment=streamrec/office_cpu", "method.annotator.steps=-1"],
     "method.annotator.steps=-1 must be a number >= 1"),
    (["+data.foo=1"], "data.foo is set but rucai.data.synthetic.SyntheticDataModule takes no 'foo'"),
])
def test_one_line_errors(args, expect, tmp_path):
    r = run_cli(*args, "debug=smoke", run_dir=tmp_path / "run", timeout=180)
    assert r.returncode != 0
    err = [ln for ln in r.stderr.splitlines() if ln.strip() and "Warning" not in ln and "warn" not in ln]
    assert "Traceback" not in r.stderr, r.stderr
    assert err and err[-1].startswith("error: ") and expect in err[-1], r.stderr


def test_config_node_that_does_not_fit_its_target_is_one_line():
    """Hydra's InstantiationException over a TypeError (a stray or a missing key) names the key and the fix."""
    from hydra.utils import instantiate

    from rucai.dispatch import config_error

    def error_of(node):
        try:
            instantiate({"item_tokenizer": node})
        except Exception as e:  # the exception under test
            return config_error(e)
        raise AssertionError("instantiate did not fail")

    stray = error_of({"_target_": "rucai.rec.tokenization.CodesFile", "path": "x.json", "encoder": "minilm"})
    assert str(stray).startswith("item_tokenizer.encoder is set but rucai.rec.tokenization.CodesFile takes no "
                                 "'encoder'") and "~item_tokenizer.encoder" in str(stray)
    missing = error_of({"_target_": "rucai.rec.tokenization.CodesFile"})
    assert str(missing) == ("rucai.rec.tokenization.CodesFile (item_tokenizer) needs path: "
                            "set +item_tokenizer.path=...")
    assert config_error(ValueError("x")) is None
