"""DAPOTrainer on the embedded tiny model: drop-in parity, dynamic sampling outcomes, shaping, LoRA / 4-bit."""

import copy
import math
import re

import pytest
import torch
from transformers import AutoModelForCausalLM
from trl import GRPOConfig, GRPOTrainer

from trl_ext import DAPOConfig, DAPOTrainer
from trl_ext.toy import AdditionTask

G = 4




def _answer_sum(prompt_text: str) -> int:
    a, b = re.search(r"(\d+)\+(\d+)", prompt_text).groups()
    return int(a) + int(b)


def informative_if_even(prompts, completions, answer, **kwargs):
    """0,1,0,1 inside a group when the answer is even, all 0 otherwise: a known keep mask, whatever is generated."""
    return [float(i % 2) if int(a) % 2 == 0 else 0.0 for i, a in enumerate(answer)]


def always_one(prompts, **kwargs):
    return [1.0] * len(prompts)


def always_zero(prompts, **kwargs):
    return [0.0] * len(prompts)


def always_none(prompts, **kwargs):
    return [None] * len(prompts)


def config(tmp_path, cls=DAPOConfig, **overrides):
    kwargs = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        num_generations=G,
        max_completion_length=6,
        max_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        seed=0,
        use_cpu=True,
        bf16=False,  # TRL defaults to bf16 autocast, emulated (slowly) on CPUs
        gradient_checkpointing=False,
        disable_tqdm=True,
    )
    kwargs.update(overrides)
    return cls(**kwargs)


def trainer(ckpt, tokenizer, args, reward_funcs, n_prompts=32, cls=DAPOTrainer, **kwargs):
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    data = AdditionTask().prompt_dataset(n_prompts, seed=0)
    return cls(model=model, reward_funcs=reward_funcs, args=args, train_dataset=data, processing_class=tokenizer, **kwargs)


def record_batches(t):
    """Wrap _prepare_inputs to keep every micro-batch the loss sees."""
    seen, original = [], t._prepare_inputs

    def spy(batch):
        out = original(batch)
        if t.model.training:
            seen.append({k: v.detach().clone() if torch.is_tensor(v) else v for k, v in out.items()})
        return out

    t._prepare_inputs = spy
    return seen


def record_loss_inputs(t):
    """Wrap _compute_loss to keep every micro-batch that reaches the loss (what the gradient is computed from)."""
    seen, original = [], t._compute_loss

    def spy(model, inputs):
        seen.append({k: v.detach().clone() if torch.is_tensor(v) else v for k, v in inputs.items()})
        return original(model, inputs)

    t._compute_loss = spy
    return seen


def logged(t, key):
    return [h[key] for h in t.state.log_history if key in h]


def row_key(batch, i):
    """Row ``i``'s prompt and completion tokens, padding left out: the same sample in any batch it lands in."""
    prompt = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()]
    completion = batch["completion_ids"][i][batch["completion_mask"][i].bool()]
    return tuple(prompt.tolist()), tuple(completion.tolist())


def completion_logps(ckpt, weights, batch):
    """log p(completion token | prompt, earlier tokens) of every row of ``batch`` under ``weights``, (B, C): a fresh
    copy of the model, one forward pass, log-softmax at temperature 1 (the config's), gathered at the tokens."""
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    model.load_state_dict(weights)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)  # (B, P + C)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    C = batch["completion_ids"].size(1)
    with torch.no_grad():
        logits = model.eval()(input_ids=ids, attention_mask=mask).logits[:, -C - 1 : -1]  # (B, C, V): predicts C
    return logits.log_softmax(-1).gather(-1, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)


class SamplingSpy:
    """Spies on a trainer's generation rounds and loss: for each round, its generation batch, the policy's weights
    when it sampled (before the round) and the rows it generated (``row_key``); for each micro-batch that reaches the
    loss, its generation batch, the inputs and the policy's weights at that moment."""

    def __init__(self, t):
        self.rounds, self.losses, self.generation = [], [], 0
        generate, generate_round, loss = t._generate_and_score_completions, t._generate_round, t._compute_loss
        weights = lambda: {k: v.detach().clone() for k, v in t.model.state_dict().items()}  # noqa: E731

        def spy_generate(inputs):
            self.generation += 1
            return generate(inputs)

        def spy_round(inputs):
            before = weights()
            output, rewards = generate_round(inputs)
            keys = {row_key(output, i) for i in range(output["completion_ids"].size(0))}
            self.rounds.append((self.generation, before, keys))
            return output, rewards

        def spy_loss(model, inputs):
            kept = {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in inputs.items()}
            self.losses.append((self.generation, kept, weights()))
            return loss(model, inputs)

        t._generate_and_score_completions, t._generate_round, t._compute_loss = spy_generate, spy_round, spy_loss

    def sources(self, batch, i) -> list[int]:
        """The rounds that generated row ``i`` of ``batch`` (usually one; a repeated sample may match several)."""
        return [r for r, (_, _, rows) in enumerate(self.rounds) if row_key(batch, i) in rows]

    def carried(self, generation, batch) -> list[int]:
        """Rows of ``batch`` (trained in ``generation``) that an earlier generation batch sampled: carried surplus."""
        return [i for i in range(batch["completion_ids"].size(0))
                if all(self.rounds[r][0] < generation for r in self.sources(batch, i))]

    def check_behaviour_logps(self, ckpt) -> int:
        """Every row of a micro-batch that brings ``old_per_token_logps`` has those of the policy that sampled it (a
        fresh forward pass with the weights before its round, on its completion tokens), and every micro-batch
        holding carried rows brings them. Returns how many rows the policy at the loss gives other log-probs: rows
        sampled by an earlier policy, on which the clipped ratio acts."""
        moved = 0
        for generation, batch, loss_weights in self.losses:
            if "old_per_token_logps" not in batch:
                assert not self.carried(generation, batch), "carried rows reached the loss without behaviour log-probs"
                continue
            mask, old = batch["completion_mask"].bool(), batch["old_per_token_logps"]  # (B, C)
            expected = {}  # round -> (B, C)
            for i in range(old.size(0)):
                sources = self.sources(batch, i)
                assert sources, f"row {i} of a trained batch was generated by no round"
                for r in sources:
                    if r not in expected:
                        expected[r] = completion_logps(ckpt, self.rounds[r][1], batch)
                assert any(torch.allclose(old[i][mask[i]], expected[r][i][mask[i]], atol=1e-5) for r in sources), (
                    f"row {i}: old_per_token_logps {old[i][mask[i]].tolist()} are not the sampling policy's "
                    f"{[expected[r][i][mask[i]].tolist() for r in sources]}"
                )
            at_loss = completion_logps(ckpt, loss_weights, batch)
            moved += sum(not torch.allclose(old[i][mask[i]], at_loss[i][mask[i]], atol=1e-4) for i in range(len(old)))
        return moved


def record_answers_by_step(t, reward):
    """Wrap ``reward`` (a function of ``answer``) to keep the answers of every generation round, grouped by the
    training step whose generation asked for them. Returns (the wrapped reward, the list of steps)."""
    steps, original = [], t._prepare_inputs

    def spy(batch):
        steps.append([])
        return original(batch)

    def recorded(prompts, completions, answer, **kwargs):
        steps[-1].append(list(answer))
        return reward(prompts, completions, answer, **kwargs)

    t._prepare_inputs = spy
    recorded.__name__ = reward.__name__
    return recorded, steps


def expected_dynamic_sampling(steps, informative, need, staleness=1):
    """The dynamic-sampling metrics DAPO's rule predicts from the rewards the test fed in (``steps``: each step's
    rounds, each round the answers of its rows, groups of G consecutive rows): a group is informative when
    ``informative(answer)``; informative groups join a first-in-first-out pool, a step trains on the ``need`` oldest,
    and surplus generated more than ``staleness`` steps before is dropped when a step begins."""
    pool, out = [], []  # pool: [step generated, groups]
    for step, rounds in enumerate(steps, 1):
        dropped = sum(n for s, n in pool if step - s > staleness)
        pool = [[s, n] for s, n in pool if step - s <= staleness]
        carried_in = sum(n for _, n in pool)
        kept_per_round = [sum(informative(a) for a in answers[::G]) for answers in rounds]
        # rounds are drawn until the pool holds `need` groups, and no further
        assert carried_in + sum(kept_per_round[:-1]) < need <= carried_in + sum(kept_per_round) or not rounds
        pool.append([step, sum(kept_per_round)])
        left = need
        while left:
            n = min(left, pool[0][1])
            pool[0][1] -= n
            left -= n
            if pool[0][1] == 0:
                pool.pop(0)
        out.append({
            "generated_groups": sum(len(answers) // G for answers in rounds), "kept_groups": sum(kept_per_round),
            "refill_rounds": max(len(rounds) - 1, 0), "carried_in_groups": carried_in, "surplus_dropped": dropped,
            "surplus_carried": sum(n for _, n in pool),
        })
    return out


def check_dynamic_sampling_metrics(t, expected):
    for key in expected[0]:
        assert logged(t, f"dynamic_sampling/{key}") == [e[key] for e in expected], key
    # logged only on steps that generated (the carried surplus can fill a step alone)
    assert logged(t, "dynamic_sampling/frac_informative") == pytest.approx(
        [e["kept_groups"] / e["generated_groups"] for e in expected if e["generated_groups"]])
    totals = t.dynamic_sampling_totals
    assert totals["generated_groups"] == sum(e["generated_groups"] for e in expected)
    assert totals["informative"] == sum(e["kept_groups"] for e in expected)
    assert totals["dropped"] == sum(e["surplus_dropped"] for e in expected)
    assert t.pooled_groups == expected[-1]["surplus_carried"]


# ---- config --------------------------------------------------------------------------------------------------------
def test_paper_defaults(tmp_path):
    args = config(tmp_path)
    assert (args.epsilon, args.epsilon_high, args.loss_type, args.beta) == (0.2, 0.28, "dapo", 0.0)
    assert args.dynamic_sampling and args.overlong_buffer_length == 6 // 5 and args.overlong_penalty_factor == 1.0


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(num_generations=1, per_device_train_batch_size=2), "num_generations=1.*dynamic_sampling=False"),
        (dict(epsilon=0.3, epsilon_high=0.2), "epsilon_high=0.2 < epsilon=0.3"),
        (dict(dynamic_sampling_on_cap="loop"), "dynamic_sampling_on_cap"),
        (dict(overlong_buffer_length=7), "overlong_buffer_length=7"),
        (dict(dynamic_sampling_max_refill_rounds=-1), "dynamic_sampling_max_refill_rounds"),
        # generation_batch_size = 8 x 1 process x 1 step
        (dict(max_generated_completions=7), r"max_generated_completions=7 < generation_batch_size=8.*>= 8"),
        (dict(max_generated_completions=64, dynamic_sampling=False),
         r"max_generated_completions=64.*every step generates generation_batch_size=8.*max_steps = .* = 8"),
    ],
)
def test_bad_config_fails_early_naming_the_field(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        config(tmp_path, **overrides)


def test_bad_trainer_inputs(tmp_path, ckpt, tokenizer):
    with pytest.raises(TypeError, match="DAPOConfig"):
        trainer(ckpt, tokenizer, config(tmp_path, cls=GRPOConfig), [always_one])
    with pytest.raises(ValueError, match="dynamic_sampling_signal='accuracy'"):
        trainer(ckpt, tokenizer, config(tmp_path, dynamic_sampling_signal="accuracy"), [always_one])


# ---- drop-in ------------------------------------------------------------------------------------------------------
def test_one_reward_tokenizer_for_one_reward_model_as_trl_accepts(tmp_path, ckpt, tokenizer):
    from transformers import AutoModelForSequenceClassification

    rm = AutoModelForSequenceClassification.from_pretrained(ckpt, num_labels=1)
    args = config(tmp_path, max_steps=1, dynamic_sampling=False)  # overlong shaping is on (buffer 6 // 5 = 1)
    t = trainer(ckpt, tokenizer, args, rm, reward_processing_classes=tokenizer)
    assert t.reward_processing_classes == [tokenizer]  # shaping is no reward function: TRL's list, as given
    seen = record_batches(t)
    t.train()
    # the logged reward is the RM's score of each conversation (prompt, then the completion as the assistant's
    # turn, through the chat template), scored here one at a time, unpadded
    scores = []
    for b in seen:
        for i in range(b["completion_ids"].size(0)):
            prompt = tokenizer.decode(b["prompt_ids"][i][b["prompt_mask"][i].bool()])
            question = re.fullmatch(r"<\|user\|>(.*)<\|end\|><\|assistant\|>", prompt).group(1)
            answer = tokenizer.decode(b["completion_ids"][i][b["completion_mask"][i].bool()], skip_special_tokens=True)
            text = tokenizer.apply_chat_template([{"role": "user", "content": question},
                                                  {"role": "assistant", "content": answer}], tokenize=False)
            with torch.no_grad():
                scores.append(rm(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item())
    assert len(scores) == 8
    name = t.reward_func_names[0]
    assert t.state.log_history[0][f"rewards/{name}/mean"] == pytest.approx(sum(scores) / len(scores), abs=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(reward_weights=[1.0, 2.0]), r"Number of reward weights \(2\) must match number of reward functions \(1\)"),
        (dict(reward_processing_classes=[None, None]),
         r"number of reward processing classes \(2\) must match the number of reward functions \(1\)"),
    ],
)
def test_reward_lists_are_counted_by_trl_against_the_users_functions(tmp_path, ckpt, tokenizer, kwargs, match):
    weights = kwargs.pop("reward_weights", None)
    with pytest.raises(ValueError, match=match):  # TRL's own check and message: shaping adds no entry
        trainer(ckpt, tokenizer, config(tmp_path, reward_weights=weights), [always_one], **kwargs)


def test_the_trainers_reward_lists_are_the_users(tmp_path, ckpt, tokenizer):
    args = config(tmp_path, reward_weights=[0.7, 0.3])  # overlong shaping on (the default)
    t = trainer(ckpt, tokenizer, args, [always_one, always_zero])
    assert t.reward_funcs == [always_one, always_zero]
    assert t.reward_func_names == ["always_one", "always_zero"] and t.reward_processing_classes == [None, None]
    assert t.reward_weights.tolist() == pytest.approx([0.7, 0.3]) and args.reward_weights == [0.7, 0.3]


@pytest.mark.parametrize("reward_funcs", [None, []])
def test_no_reward_source_is_trls_error(tmp_path, ckpt, tokenizer, reward_funcs):
    with pytest.raises(ValueError, match="No reward source provided"):  # shaping is not a reward source
        trainer(ckpt, tokenizer, config(tmp_path), reward_funcs)


def length_fraction(prompts, completion_ids, **kwargs):
    """|y| / 6: varies with the length, so reward_std is not 0 and the shaping (|y| / 6 too) is checkable."""
    return [len(ids) / 6 for ids in completion_ids]


def test_logged_reward_is_trls_with_shaping_on(tmp_path, ckpt, tokenizer):
    # the case: two reward functions weighted 0.7 / 0.3; overlong shaping over the whole length
    # (L_cache = L_max = 6: penalty -|y| / 6), so it would change every logged number if it leaked into them
    seen = []

    def recorded(prompts, completion_ids, **kwargs):
        values = length_fraction(prompts, completion_ids)
        seen.append(values)
        return values

    recorded.__name__ = "length_fraction"
    common = dict(reward_weights=[0.7, 0.3], max_steps=2)
    grpo = trainer(ckpt, tokenizer, config(tmp_path, cls=GRPOConfig, **common), [always_one, length_fraction],
                   cls=GRPOTrainer)
    grpo.train()
    dapo = trainer(ckpt, tokenizer, config(tmp_path, dynamic_sampling=False, overlong_buffer_length=6, **common),
                   [always_one, recorded])
    dapo.train()
    assert len(seen) == 2
    logs = [h for h in dapo.state.log_history if "reward" in h]
    for h, fraction in zip(logs, seen, strict=True):  # TRL's formula, by hand: mean and (n - 1) std of 0.7 + 0.3 f
        total = [0.7 * 1.0 + 0.3 * f for f in fraction]
        mean = sum(total) / len(total)
        assert h["reward"] == pytest.approx(mean, abs=1e-6)
        assert h["reward_std"] == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in total) / (len(total) - 1)),
                                                abs=1e-6)
        assert h["rewards/always_one/mean"] == 1.0
        assert h["rewards/length_fraction/mean"] == pytest.approx(sum(fraction) / len(fraction), abs=1e-6)
        # the shaping beside it, under its own name: -|y| / 6 = -f
        assert h["shaping/overlong/mean"] == pytest.approx(-sum(fraction) / len(fraction), abs=1e-6)
        assert not any("overlong" in k for k in h if k.startswith("rewards/"))
    # step 1 generates from the same weights and seed as GRPO: the same completions, the same logged numbers
    first = next(h for h in grpo.state.log_history if "reward" in h)
    for key in ("reward", "reward_std", "rewards/always_one/mean", "rewards/length_fraction/mean",
                "rewards/length_fraction/std", "frac_reward_zero_std"):
        assert logs[0][key] == pytest.approx(first[key], abs=1e-6), key


class Counter:
    """A TRL environment (``environment_factory``) that owns the reward: 1 per rollout."""

    def reset(self, **kwargs):
        return "Say something."

    def get_reward(self):
        return 1.0


def test_an_environment_owns_the_reward_and_the_prompts(tmp_path, ckpt, tokenizer, monkeypatch):
    # TRL 1.16: rows may carry only `environment` (reset() gives the prompt) and get_reward() is the reward source;
    # it needs a tool-calling chat template, so the toy tokenizer gets TRL's Qwen3 one
    import pathlib

    import trl
    from datasets import Dataset

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = (pathlib.Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text()
    args = config(tmp_path, max_steps=1, dynamic_sampling=False, overlong_buffer_length=6)
    t = DAPOTrainer(AutoModelForCausalLM.from_pretrained(ckpt), None, args=args, processing_class=tok,
                    train_dataset=Dataset.from_dict({"environment": ["counter"] * 8}),
                    environment_factory={"counter": Counter})
    assert t.reward_func_names == ["Counter"]  # the environment's reward, no built-in column before it
    t.train()
    h = t.state.log_history[0]
    assert h["reward"] == 1.0 and h["rewards/Counter/mean"] == 1.0
    assert h["shaping/overlong/mean"] == pytest.approx(-h["completions/mean_length"] / 6, abs=1e-5)


def test_all_none_rewards_give_trls_warning(tmp_path, ckpt, tokenizer, caplog):
    args = config(tmp_path, dynamic_sampling=False, max_steps=1)  # overlong shaping on: it must not hide the None
    t = trainer(ckpt, tokenizer, args, [always_none])
    with caplog.at_level("WARNING", logger="trl.trainer.grpo_trainer"):
        t.train()
    assert any("All reward functions returned None for the following kwargs" in r.getMessage()
               for r in caplog.records)


def test_same_losses_as_grpo_with_dynamic_sampling_off(tmp_path, ckpt, tokenizer):
    common = dict(epsilon=0.2, epsilon_high=0.28, loss_type="dapo", beta=0.0, max_steps=3)
    grpo = trainer(ckpt, tokenizer, config(tmp_path, cls=GRPOConfig, **common), [informative_if_even], cls=GRPOTrainer)
    grpo.train()
    dapo = trainer(
        ckpt, tokenizer, config(tmp_path, dynamic_sampling=False, overlong_buffer_length=0, **common),
        [informative_if_even],
    )
    dapo.train()
    assert len(logged(grpo, "loss")) == 3
    assert logged(dapo, "loss") == pytest.approx(logged(grpo, "loss"), rel=1e-6, abs=1e-9)
    assert logged(dapo, "reward") == logged(grpo, "reward")


# ---- dynamic sampling ---------------------------------------------------------------------------------------------
def test_dynamic_sampling_trains_only_on_informative_groups(tmp_path, ckpt, tokenizer):
    t = trainer(ckpt, tokenizer, config(tmp_path, max_steps=3, overlong_buffer_length=0), [informative_if_even])
    t.reward_funcs[0], steps = record_answers_by_step(t, informative_if_even)
    before = [p.detach().clone() for p in t.model.parameters()]
    seen = record_batches(t)
    t.train()
    assert len(seen) == 3
    for batch in seen:
        assert batch["completion_ids"].size(0) == 8  # TRL's per-device batch size, no truncation
        # 0,1,0,1 normalised by its std (0.577) gives +-0.866 on every row: no zero-advantage row was kept
        assert batch["advantages"].abs().min() > 0.8
        prompts = tokenizer.batch_decode(batch["prompt_ids"], skip_special_tokens=False)
        assert all(_answer_sum(p) % 2 == 0 for p in prompts)
        assert batch["num_items_in_batch"] == batch["completion_mask"].sum()  # one process: the whole batch
    # the metrics are the counts the fed-in rewards give: a group is informative exactly when its answer is even
    expected = expected_dynamic_sampling(steps, lambda a: int(a) % 2 == 0, need=2)
    check_dynamic_sampling_metrics(t, expected)
    assert t.dynamic_sampling_totals["trained"] == 3 * 2
    assert any(e["refill_rounds"] > 0 for e in expected)
    assert any(not torch.equal(a, b) for a, b in zip(before, t.model.parameters()))


def test_surplus_is_carried_with_its_behaviour_logprobs(tmp_path, ckpt, tokenizer):
    def informative_unless_multiple_of_3(prompts, completions, answer, **kwargs):
        return [float(i % 2) if int(a) % 3 else 0.0 for i, a in enumerate(answer)]

    args = config(tmp_path, max_steps=4, overlong_buffer_length=0, per_device_train_batch_size=16)
    t = trainer(ckpt, tokenizer, args, [informative_unless_multiple_of_3])
    t.reward_funcs[0], steps = record_answers_by_step(t, informative_unless_multiple_of_3)
    spy = SamplingSpy(t)
    t.train()
    expected = expected_dynamic_sampling(steps, lambda a: int(a) % 3 != 0, need=4)
    check_dynamic_sampling_metrics(t, expected)
    assert sum(e["carried_in_groups"] for e in expected) > 0
    assert any(spy.carried(g, b) for g, b, _ in spy.losses)
    # carried rows hold the log-probs of the policy that sampled them, which the policy at the loss no longer gives
    assert spy.check_behaviour_logps(ckpt) > 0


def test_carried_groups_get_behaviour_logprobs_whatever_rule_trl_follows(tmp_path, ckpt, tokenizer, monkeypatch):
    """Whether a round brought behaviour log-probs is read from GRPOTrainer's output, not from its private rule: here
    TRL's rule says it computes them (steps_per_generation=2 is off-policy), but a TRL that stopped doing so must not
    leave carried groups (trained on by a later policy) without them: clipping would do nothing."""
    generate = GRPOTrainer._generate_and_score_completions

    def without_old_logps(self, inputs):
        output = generate(self, inputs)
        output.pop("old_per_token_logps", None)
        return output

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", without_old_logps)

    def informative_unless_multiple_of_3(prompts, completions, answer, **kwargs):
        return [float(i % 2) if int(a) % 3 else 0.0 for i, a in enumerate(answer)]

    args = config(tmp_path, max_steps=4, steps_per_generation=2)
    t = trainer(ckpt, tokenizer, args, [informative_unless_multiple_of_3])
    spy = SamplingSpy(t)
    t.train()
    assert sum(logged(t, "dynamic_sampling/carried_in_groups")) > 0
    assert any(spy.carried(g, b) for g, b, _ in spy.losses)
    assert spy.check_behaviour_logps(ckpt) > 0


def test_works_with_steps_per_generation_accumulation_and_iterations(tmp_path, ckpt, tokenizer):
    args = config(
        tmp_path, max_steps=2, per_device_train_batch_size=4, gradient_accumulation_steps=2, steps_per_generation=4,
        num_iterations=2, overlong_buffer_length=2,
    )
    t = trainer(ckpt, tokenizer, args, [informative_if_even])
    before = [p.detach().clone() for p in t.model.parameters()]
    seen = record_batches(t)
    t.train()
    assert [b["completion_ids"].size(0) for b in seen] == [4] * 4  # 2 steps x 2 accumulation micro-batches
    assert all("old_per_token_logps" in b for b in seen)  # TRL computes them itself here
    for b in seen:  # the overlong term moves the advantages, but only even-sum (informative) prompts are kept
        assert all(_answer_sum(p) % 2 == 0 for p in tokenizer.batch_decode(b["prompt_ids"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, t.model.parameters()))


@pytest.mark.parametrize("reward, value", [(always_one, "1"), (always_zero, "0")])
def test_all_solved_or_all_failed_raises_at_the_cap(tmp_path, ckpt, tokenizer, reward, value):
    args = config(tmp_path, dynamic_sampling_max_refill_rounds=2, dynamic_sampling_on_cap="raise")
    t = trainer(ckpt, tokenizer, args, [reward])
    rounds = []
    original = DAPOTrainer._refill_inputs
    t._refill_inputs = lambda *a: rounds.append(1) or original(t, *a)
    with pytest.raises(RuntimeError, match=rf"found 0 informative groups of the 2.*after 3 generation rounds.*"
                                           rf"all equal to {value}.*dynamic_sampling_on_cap='train_on_kept'"):
        t.train()
    assert len(rounds) == 2  # bounded: the first round plus exactly max_refill_rounds refills


def alternating(prompts, **kwargs):
    """0,1,0,1 in every group: every group is informative, so each step is exactly one round (8 completions)."""
    return [float(i % 2) for i in range(len(prompts))]


def uninformative_for(calls: int):
    """All 0 for the first ``calls`` generation rounds, then ``alternating``."""
    seen = []

    def reward(prompts, **kwargs):
        seen.append(1)
        return always_zero(prompts) if len(seen) <= calls else alternating(prompts)

    return reward


def test_generation_budget_caps_refills_and_stops_training(tmp_path, ckpt, tokenizer):
    # a round = generation_batch_size = 8 completions (2 groups, the step's need); budget 52 = 6.5 rounds.
    # step 1: 52 // 8 - 1 = 5 refills allowed; rounds 1-2 uninformative, round 3 fills the batch -> 24 generated
    # step 2: (52 - 24) // 8 - 1 = 2 allowed, one round used -> 32; step 3: 1 allowed -> 40; step 4: 0 -> 48
    # after step 4 the 4 completions left cannot pay for a round: training stops although max_steps is 10
    args = config(tmp_path, max_steps=10, overlong_buffer_length=0, max_generated_completions=52)
    t = trainer(ckpt, tokenizer, args, [uninformative_for(2)])
    t.train()
    assert t.state.global_step == 4
    assert logged(t, "dynamic_sampling/refill_rounds") == [2, 0, 0, 0]
    assert t.dynamic_sampling_totals["generated_groups"] * G == 48 <= 52
    assert t.args.dynamic_sampling_max_refill_rounds == 8  # the per-step cap is computed, the config left alone


def test_generation_budget_cap_trains_on_kept_and_says_why(tmp_path, ckpt, tokenizer, caplog):
    # budget 40 = 5 rounds: 40 // 8 - 1 = 4 refills instead of 8; all 5 rounds uninformative (the 7th would not be)
    args = config(tmp_path, max_steps=10, overlong_buffer_length=0, max_generated_completions=40)
    t = trainer(ckpt, tokenizer, args, [uninformative_for(6)])
    with caplog.at_level("WARNING", logger="trl_ext.dapo"):
        t.train()
    assert t.state.global_step == 1 and t.dynamic_sampling_totals["generated_groups"] * G == 40
    assert logged(t, "dynamic_sampling/refill_rounds") == [4]
    assert logged(t, "dynamic_sampling/padded_groups") == [2]
    assert any("dynamic_sampling_max_refill_rounds=8, lowered to 4 by what is left of max_generated_completions"
               in r.getMessage() for r in caplog.records)


def test_resumed_run_keeps_to_the_generation_budget(tmp_path, ckpt, tokenizer):
    # one round (8 completions) a step; budget 44 stops after step 5 (40 generated, 4 left)
    def run(resume=None, **overrides):
        args = config(tmp_path, max_steps=10, overlong_buffer_length=0, max_generated_completions=44,
                      save_strategy="steps", save_steps=1, **overrides)
        t = trainer(ckpt, tokenizer, args, [alternating])
        t.train(resume_from_checkpoint=resume)
        return t

    run()
    resumed = run(resume=str(tmp_path / "checkpoint-2"))  # 16 generated before, restored with the checkpoint
    assert resumed.state.global_step == 5
    assert resumed.dynamic_sampling_totals["generated_groups"] * G == 40
    with pytest.raises(RuntimeError, match=r"max_generated_completions=44 is spent \(4 completions left"):
        run(resume=str(tmp_path / "checkpoint-5"))


def test_sparse_reward_trains_on_by_default_with_a_warning(tmp_path, ckpt, tokenizer, caplog):
    # all 0 for the first two steps (2 rounds each, the cap), then informative: trl.GRPOTrainer trains on through
    # such a start, so the default must too (raising here would stop a run that GRPO would have trained on)
    calls = []

    def sparse_then_informative(prompts, completions, answer, **kwargs):
        calls.append(1)
        return always_zero(prompts) if len(calls) <= 4 else informative_if_even(prompts, completions, answer)

    args = config(tmp_path, max_steps=3, overlong_buffer_length=0, dynamic_sampling_max_refill_rounds=1)
    assert args.dynamic_sampling_on_cap == "train_on_kept"
    t = trainer(ckpt, tokenizer, args, [sparse_then_informative])
    before = [p.detach().clone() for p in t.model.parameters()]
    with caplog.at_level("WARNING", logger="trl_ext.dapo"):
        t.train()
    assert logged(t, "dynamic_sampling/padded_groups")[:2] == [2, 2] and logged(t, "dynamic_sampling/padded_groups")[2] < 2
    capped = [r.getMessage() for r in caplog.records if "masked filler groups" in r.getMessage()]
    assert len(capped) == 2 and "found 0 informative groups of the 2" in capped[0] and "all equal to 0" in capped[0]
    # the 2nd capped step: a short count instead of the same paragraph again
    assert capped[1].startswith("Dynamic sampling stopped short again: 2 steps") and "0 informative of 2" in capped[1]
    assert logged(t, "loss")[:2] == [0.0, 0.0]  # filler only: no gradient, as GRPO's all-zero advantages
    assert any(not torch.equal(a, b) for a, b in zip(before, t.model.parameters()))  # step 3 trained


MAX_LEN = 6


def truncated_is_right(prompts, completions, completion_ids, answer, **kwargs):
    """Even answers: "right" exactly when truncated (|y| = L_max); with L_cache = 1 the overlong penalty is -1 there
    and 0 below, so the total is 0 for every completion although the accuracy varies. Odd answers: 0 or 10 by
    position, which a penalty in [-1, 0] cannot cancel."""
    return [float(len(ids) == MAX_LEN) if int(a) % 2 == 0 else 10.0 * (i % 2)
            for i, (ids, a) in enumerate(zip(completion_ids, answer, strict=True))]


@pytest.mark.parametrize("algorithm", ["dapo", "rloo"])
def test_no_zero_advantage_group_reaches_the_loss_when_shaping_cancels_the_signal(tmp_path, ckpt, tokenizer,
                                                                                   algorithm):
    from trl_ext import RLOOConfig, RLOOTrainer

    cancelled = []  # even-answer groups whose accuracy varies: their total reward is constant

    def reward(prompts, completions, completion_ids, answer, **kwargs):
        values = truncated_is_right(prompts, completions, completion_ids, answer)
        for start in range(0, len(values), G):
            group = values[start : start + G]
            if int(answer[start]) % 2 == 0 and len(set(group)) > 1:
                cancelled.append(group)
        return values

    reward.__name__ = "accuracy"
    common = dict(max_steps=3, max_completion_length=MAX_LEN, overlong_buffer_length=1, overlong_penalty_factor=1.0,
                  dynamic_sampling=True, dynamic_sampling_max_refill_rounds=4, beta=0.0)
    cls, config_cls = (DAPOTrainer, DAPOConfig) if algorithm == "dapo" else (RLOOTrainer, RLOOConfig)
    t = trainer(ckpt, tokenizer, config(tmp_path, cls=config_cls, **common), [reward], cls=cls)
    seen = record_loss_inputs(t)
    t.train()
    assert cancelled, "the scenario never happened: no even-answer group mixed truncated and finished answers"
    assert len(seen) == 3
    for batch in seen:
        advantages = batch["advantages"].view(-1, G)  # (groups, G)
        trained = batch["completion_mask"].view(-1, G, batch["completion_mask"].size(1)).sum(dim=(1, 2)) > 0
        assert (advantages[trained].abs().amax(dim=1) > 0).all(), f"zero-advantage group trained on: {advantages}"
        prompts = tokenizer.batch_decode(batch["prompt_ids"][trained.repeat_interleave(G)])
        assert all(_answer_sum(p) % 2 == 1 for p in prompts)  # only the odd (uncancelled) prompts are trained on
    assert sum(logged(t, "dynamic_sampling/zero_advantage_groups")) > 0


def test_train_on_kept_masks_the_rest_and_keeps_the_batch_size(tmp_path, ckpt, tokenizer):
    args = config(tmp_path, dynamic_sampling_max_refill_rounds=1, dynamic_sampling_on_cap="train_on_kept")
    t = trainer(ckpt, tokenizer, args, [always_one])
    seen = record_batches(t)
    t.train()
    assert [b["completion_ids"].size(0) for b in seen] == [8, 8]
    assert all(b["completion_mask"].sum() == 0 and b["advantages"].eq(0).all() for b in seen)
    assert logged(t, "loss") == [0.0, 0.0]
    assert logged(t, "dynamic_sampling/padded_groups") == [2, 2]


def test_reward_returning_none_everywhere(tmp_path, ckpt, tokenizer):
    # dynamic sampling: a bounded, explicit error
    args = config(tmp_path, dynamic_sampling_max_refill_rounds=1, dynamic_sampling_on_cap="raise")
    t = trainer(ckpt, tokenizer, args, [always_none])
    with pytest.raises(RuntimeError, match="no finite value.*returned None/NaN"):
        t.train()
    # without it: overlong shaping must not turn unscorable completions into scored ones -> zero advantage
    args = config(tmp_path, dynamic_sampling=False, overlong_buffer_length=6)
    t = trainer(ckpt, tokenizer, args, [always_none])
    seen = record_batches(t)
    t.train()
    assert all(b["advantages"].eq(0).all() for b in seen)
    assert logged(t, "loss") == [0.0, 0.0]


def test_dataset_smaller_than_one_refill_wraps_around(tmp_path, ckpt, tokenizer):
    # 2 prompts and a step needs 2 informative groups; only the even-sum prompt can be informative, so each step
    # must draw past the end of the dataset (reshuffled each pass) and still finishes within the cap.
    data = AdditionTask().prompt_dataset(40, seed=0)
    even = [i for i, a in enumerate(data["answer"]) if int(a) % 2 == 0][:1]
    odd = [i for i, a in enumerate(data["answer"]) if int(a) % 2 == 1][:1]
    args = config(tmp_path, overlong_buffer_length=0, dynamic_sampling_max_refill_rounds=6)
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    t = DAPOTrainer(model, [informative_if_even], args=args, train_dataset=data.select(even + odd),
                    processing_class=tokenizer)
    t.train()
    assert t.dynamic_sampling_totals["trained"] == 4
    assert sum(logged(t, "dynamic_sampling/refill_rounds")) >= 1


def test_overlong_shaping_is_logged_beside_the_reward_and_reaches_the_advantages(tmp_path, ckpt, tokenizer):
    # buffer == max_completion_length: penalty = -|y| / 6 for every completion, so its mean is -mean_length / 6
    args = config(tmp_path, dynamic_sampling=False, overlong_buffer_length=6)
    t = trainer(ckpt, tokenizer, args, [always_one])
    seen, generate = [], t._generate_and_score_completions  # the generation batch, groups still consecutive

    def spy(inputs):
        seen.append(generate(inputs))
        return seen[-1]

    t._generate_and_score_completions = spy
    t.train()
    for h in t.state.log_history[:-1]:
        assert h["shaping/overlong/mean"] == pytest.approx(-h["completions/mean_length"] / 6, abs=1e-5)
        assert h["reward"] == 1.0 and h["reward_std"] == 0.0  # the user's reward, as GRPOTrainer logs it
    # every group is solved (reward 1), so GRPO's advantages would be 0; the shaped reward 1 - |y| / 6 moves them:
    # A = (s - mean_group) / (std_group + 1e-4), |y| counted from the completion mask (EOS included)
    assert len(seen) == 2
    for batch in seen:
        shaped = (1.0 - batch["completion_mask"].sum(dim=1).float() / 6).view(-1, G)  # (groups, G)
        expected = (shaped - shaped.mean(dim=1, keepdim=True)) / (shaped.std(dim=1, keepdim=True) + 1e-4)
        assert torch.allclose(batch["advantages"], expected.view(-1), atol=1e-5)
    assert any(b["advantages"].abs().max() > 0.5 for b in seen)  # lengths varied in some group
    table = t._logs["advantages"]  # the completions table shows the advantages the loss saw
    assert torch.allclose(torch.tensor(list(table)[-8:]), seen[-1]["advantages"], atol=1e-6)


def test_overlong_filtering_is_trls_mask_truncated_completions(tmp_path, ckpt, tokenizer):
    args = config(tmp_path, dynamic_sampling=False, mask_truncated_completions=True, max_steps=1)
    t = trainer(ckpt, tokenizer, args, [always_one])
    seen = record_batches(t)
    t.train()
    ids, mask = seen[0]["completion_ids"], seen[0]["completion_mask"]
    assert ids.size(1) == 6  # so a row's last column is its last token; truncated = it is neither EOS nor pad
    truncated = ~torch.isin(ids[:, -1], torch.tensor([*t.eos_token_ids, tokenizer.pad_token_id]))
    assert truncated.any()  # the untrained model rambles past 6 tokens
    assert mask[truncated].sum() == 0 and (mask[~truncated].sum(dim=1) > 0).all()


def test_shaping_cannot_make_a_solved_group_informative(tmp_path, ckpt, tokenizer):
    # the penalty varies with length, but the default signal ('reward') leaves it out: every group is constant
    args = config(tmp_path, overlong_buffer_length=6, dynamic_sampling_max_refill_rounds=0,
                  dynamic_sampling_on_cap="raise")
    t = trainer(ckpt, tokenizer, args, [always_one])
    with pytest.raises(RuntimeError, match="all equal to 1"):
        t.train()


# ---- LoRA and 4-bit -----------------------------------------------------------------------------------------------
def test_lora(tmp_path, ckpt, tokenizer):
    from peft import LoraConfig

    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    args = config(tmp_path, overlong_buffer_length=0, learning_rate=1e-2)
    t = trainer(ckpt, tokenizer, args, [informative_if_even], peft_config=peft_config)
    lora = {n: p.detach().clone() for n, p in t.model.named_parameters() if "lora_B" in n}
    assert lora
    t.train()
    assert any(not torch.equal(p, dict(t.model.named_parameters())[n]) for n, p in lora.items())


def test_4bit_lora(tmp_path, ckpt, tokenizer):
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(ckpt, quantization_config=quant, device_map={"": "cpu"})
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    args = config(tmp_path, overlong_buffer_length=0, learning_rate=1e-2, max_steps=1)
    t = DAPOTrainer(model, [informative_if_even], args=args, train_dataset=AdditionTask().prompt_dataset(16, seed=0),
                    processing_class=tokenizer, peft_config=peft_config)
    lora = {n: p.detach().clone() for n, p in t.model.named_parameters() if "lora_B" in n}
    t.train()
    assert any(not torch.equal(p, dict(t.model.named_parameters())[n]) for n, p in lora.items())


def test_carrying_surplus_on_absolute_positions_is_warned_at_construction(tmp_path, ckpt, tokenizer, caplog):
    """Carried rows are re-padded at loss time (tests/test_groups.py shows rotary models do not see it); a model
    without rotary settings gets a warning that names the setting to drop surplus instead. The toy (Qwen3) does not."""
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=64))
    data = AdditionTask().prompt_dataset(8, seed=0)
    message = "Set dynamic_sampling_max_staleness=0"
    with caplog.at_level("WARNING", logger="trl_ext.dapo"):
        DAPOTrainer(gpt2, [always_one], args=config(tmp_path), train_dataset=data, processing_class=tokenizer)
    assert sum(message in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="trl_ext.dapo"):
        DAPOTrainer(gpt2, [always_one], args=config(tmp_path, dynamic_sampling_max_staleness=0), train_dataset=data,
                    processing_class=tokenizer)
        trainer(ckpt, tokenizer, config(tmp_path), [always_one])
    assert not any(message in r.getMessage() for r in caplog.records)
