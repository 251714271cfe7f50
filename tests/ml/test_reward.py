"""The reward model on `tiny`: padding, one forward per response, learning, offset, files."""

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from training.ml.configs import RMConfig
from training.ml.loading import load_causal_lm
from training.ml.losses import kwise_ranking_loss
from training.ml.model_files import ModelLoadError
from training.ml.preferences import RankedExample
from training.ml.reward.batches import (
    RankingBatch,
    collate_rankings,
    encode_rankings,
    pad_right,
    score_rankings,
    shared_prefix_length,
)
from training.ml.reward.evaluate import calibrate_offset, evaluate_reward_model, score_texts
from training.ml.reward.model import OFFSET_KEY, RewardModel, load_reward_model, save_reward_model
from training.ml.reward.train import plan_steps, split_eval, train_reward_model

WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "green",
    "music",
    "paper",
    "light",
    "table",
    "window",
    "chair",
    "bread",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """A hidden-64 model gains nothing from threads, and loses much on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, object]:
    return load_causal_lm("tiny", device="cpu", dtype="float32")


@pytest.fixture
def rm(tiny: tuple) -> RewardModel:
    torch.manual_seed(0)
    return RewardModel.from_causal_lm(tiny[0])


@pytest.fixture
def tokenizer(tiny: tuple) -> object:
    return tiny[1]


def banana_rankings(n: int, seed: int, k: int = 4) -> list[RankedExample]:
    """K random word lists; those containing "banana" are tied best, the rest tied worst."""
    rng = random.Random(seed)
    examples = []
    for index in range(n):
        texts = []
        for position in range(k):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 7))]
            if position < k // 2:
                words.insert(rng.randrange(len(words) + 1), "banana")
            texts.append(" ".join(words))
        rng.shuffle(texts)
        good = [i for i, t in enumerate(texts) if "banana" in t]
        bad = [i for i, t in enumerate(texts) if "banana" not in t]
        examples.append(
            RankedExample("Say something.", texts, [good, bad], labeler=f"l{index % 2}")
        )
    return examples


def test_from_causal_lm_copies_the_backbone_and_adds_a_small_scalar_head(tiny: tuple) -> None:
    lm, _ = tiny
    rm = RewardModel.from_causal_lm(lm)
    lm_state = lm.model.state_dict()
    for name, tensor in rm.seq.model.state_dict().items():
        assert torch.equal(tensor, lm_state[name]), name
        assert tensor.data_ptr() != lm_state[name].data_ptr()  # a copy, not shared
    assert rm.seq.score.weight.shape == (1, lm.config.hidden_size)
    assert 0 < rm.seq.score.weight.std().item() < 0.5
    assert rm.seq.config.num_labels == 1 and rm.reward_offset == 0.0


def test_left_and_right_padding_give_identical_scores(rm: RewardModel, tokenizer) -> None:
    sequences = [tokenizer("a b c d e f g")["input_ids"], tokenizer("hello")["input_ids"]]
    sequences.append(tokenizer("one two three")["input_ids"])
    right_ids, right_mask = pad_right(sequences, tokenizer.pad_token_id, rm.device)
    width = right_ids.shape[1]
    left_ids = torch.full_like(right_ids, tokenizer.pad_token_id)
    left_mask = torch.zeros_like(right_mask)
    for row, seq in enumerate(sequences):
        left_ids[row, width - len(seq) :] = torch.tensor(seq)
        left_mask[row, width - len(seq) :] = 1
    with torch.no_grad():
        right = rm(right_ids, right_mask)
        left = rm(left_ids, left_mask)
        alone = torch.cat(
            [rm(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)) for s in sequences]
        )
        values = rm.token_values(right_ids, right_mask)
    assert torch.allclose(left, right, atol=1e-5)
    assert torch.allclose(alone, right, atol=1e-5)
    lengths = torch.tensor([len(s) for s in sequences])
    assert torch.allclose(values[torch.arange(3), lengths - 1], right, atol=1e-6)
    assert not torch.allclose(right[0], right[1])  # not trivially constant


def test_k_responses_forwarded_once_equal_the_mean_of_pairwise_losses(
    rm: RewardModel, tokenizer
) -> None:
    example = RankedExample(
        "Pick one.", ["red", "green apple", "blue sky", "no"], [[2], [0, 3], [1]]
    )
    [encoded] = encode_rankings(tokenizer, [example], max_length=64)
    batch = collate_rankings([encoded], tokenizer.pad_token_id, rm.device)
    assert batch.input_ids.shape[0] == 4  # each response once
    with torch.no_grad():
        kwise = kwise_ranking_loss(score_rankings(rm, batch), batch.prefer).item()
        pair_losses = []
        for winner, loser, _ in example.pairs:  # the pairwise way: 2 forwards per pair
            pair = [encoded.sequences[winner], encoded.sequences[loser]]
            scores = rm(*pad_right(pair, tokenizer.pad_token_id, rm.device))
            pair_losses.append(-torch.nn.functional.logsigmoid(scores[0] - scores[1]).item())
    assert len(pair_losses) == 5
    assert kwise == pytest.approx(sum(pair_losses) / len(pair_losses), abs=1e-5)


def test_training_forwards_each_response_exactly_once(rm: RewardModel, tokenizer) -> None:
    rows: list[int] = []
    hook = rm.seq.model.register_forward_hook(
        lambda m, args, kw, out: rows.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        train_reward_model(
            rm, tokenizer, banana_rankings(6, seed=1), config=RMConfig(batch_size=3, max_length=32)
        )
    finally:
        hook.remove()
    assert rows == [12, 12]  # 2 steps x 3 prompts x K=4, where pairwise would need 2 x 4 x 6


def _scores_and_grads(rm: RewardModel, batch: RankingBatch) -> tuple[torch.Tensor, list]:
    rm.zero_grad(set_to_none=True)
    scores = score_rankings(rm, batch)
    (scores * torch.linspace(-1.0, 1.0, scores.numel()).view_as(scores)).sum().backward()
    return scores.detach(), [p.grad.clone() for p in rm.parameters()]


def test_a_shared_prompt_is_forwarded_once_with_the_flat_scores_and_gradients(
    rm: RewardModel, tokenizer
) -> None:
    encoded = encode_rankings(tokenizer, banana_rankings(3, seed=4), max_length=128)
    shared = collate_rankings(encoded, tokenizer.pad_token_id, rm.device)
    flat = collate_rankings(encoded, tokenizer.pad_token_id, rm.device, share_prefix=False)
    assert shared.prefix is not None and flat.prefix is None
    assert shared.prefix.input_ids.shape[0] == 3 and shared.input_ids.shape[0] == 12
    assert shared.tokens == flat.tokens and shared.positions < flat.positions / 2
    rows: list[int] = []
    hook = rm.seq.model.register_forward_hook(
        lambda m, args, kw, out: rows.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        scores, grads = _scores_and_grads(rm, shared)
    finally:
        hook.remove()
    assert rows == [3, 12]  # the 3 prompts once, then the 12 responses on their cache
    flat_scores, flat_grads = _scores_and_grads(rm, flat)
    torch.testing.assert_close(scores, flat_scores, atol=1e-5, rtol=1e-5)
    for (name, _), grad, expected in zip(rm.named_parameters(), grads, flat_grads, strict=True):
        torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-4, msg=name)


def test_gradient_checkpointing_scores_a_shared_prefix_as_joined_sequences(
    rm: RewardModel, tokenizer
) -> None:
    encoded = encode_rankings(tokenizer, banana_rankings(2, seed=5), max_length=128)
    shared = collate_rankings(encoded, tokenizer.pad_token_id, rm.device)
    flat = collate_rankings(encoded, tokenizer.pad_token_id, rm.device, share_prefix=False)
    rm._base().activation_checkpointing_enable()  # its blocks drop a KV cache in training
    rm.train()
    scores, _ = _scores_and_grads(rm, shared)
    flat_scores, _ = _scores_and_grads(rm, flat)
    torch.testing.assert_close(scores, flat_scores, atol=1e-5, rtol=1e-5)


def test_a_prompt_cut_differently_per_response_shares_no_prefix(tokenizer) -> None:
    # at 32 tokens the chat template's start is cut by a different amount per response
    encoded = encode_rankings(tokenizer, banana_rankings(2, seed=1), max_length=32)
    assert min(shared_prefix_length(r.sequences) for r in encoded) == 0
    assert collate_rankings(encoded, tokenizer.pad_token_id, torch.device("cpu")).prefix is None
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2  # each keeps a token of its own


def test_rm_on_tiny_learns_a_synthetic_preference(rm: RewardModel, tokenizer) -> None:
    config = RMConfig(lr=3e-3, batch_size=8, max_length=32, seed=0)
    result = train_reward_model(
        rm, tokenizer, banana_rankings(160, seed=2), config=config, eval=banana_rankings(40, seed=3)
    )
    assert result["status"] == "completed" and result["pairs"] == 160 * 4
    assert result["rm/eval_accuracy"] >= 0.9, result
    assert result["eval"]["pairs"] == 40 * 4
    assert set(result["eval"]["by_labeler"]) == {"l0", "l1"}


def test_untrained_rm_is_near_chance(rm: RewardModel, tokenizer) -> None:
    accuracy = evaluate_reward_model(rm, tokenizer, banana_rankings(40, seed=3), max_length=32)[
        "accuracy"
    ]
    assert 0.2 < accuracy < 0.8


@pytest.mark.parametrize(("top_layers", "checkpointing"), [(None, False), (1, False), (None, True)])
def test_every_trainable_parameter_changes_in_one_step(
    rm: RewardModel, tokenizer, top_layers, checkpointing
) -> None:
    before = {name: p.detach().clone() for name, p in rm.named_parameters()}
    config = RMConfig(
        lr=1e-3,
        batch_size=4,
        max_length=32,
        train_top_layers=top_layers,
        gradient_checkpointing=checkpointing,
    )
    result = train_reward_model(rm, tokenizer, banana_rankings(4, seed=4), config=config)
    assert result["steps"] == 1
    trainable = {name for name, p in rm.named_parameters() if p.requires_grad}
    assert "seq.score.weight" in trainable
    for name, p in rm.named_parameters():
        changed = not torch.equal(before[name], p.detach())
        assert changed == (name in trainable), name
    if top_layers == 1:
        assert not any(".layers.0." in name or "embed_tokens" in name for name in trainable)


def test_micro_batches_accumulate_the_same_gradient(tiny: tuple, tokenizer) -> None:
    grads = []
    for max_sequences in (None, 4):
        torch.manual_seed(0)
        model = RewardModel.from_causal_lm(tiny[0])
        config = RMConfig(
            lr=1e-12,
            batch_size=3,
            max_length=32,
            max_sequences_per_forward=max_sequences,
            max_grad_norm=None,
        )
        train_reward_model(model, tokenizer, banana_rankings(3, seed=5), config=config)
        grads.append(model.seq.score.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_should_stop_cancels_before_the_next_step(rm: RewardModel, tokenizer) -> None:
    calls = []
    result = train_reward_model(
        rm,
        tokenizer,
        banana_rankings(8, seed=6),
        config=RMConfig(batch_size=2, max_length=32),
        on_metrics=lambda step, values: calls.append((step, values)),
        should_stop=lambda: len(calls) >= 2,
    )
    assert result["status"] == "cancelled" and result["steps"] == 2
    assert set(calls[0][1]) >= {"rm/loss", "rm/accuracy", "rm/lr", "charts/pairs_per_s"}


def test_offset_calibration_makes_sft_samples_average_zero(rm: RewardModel, tokenizer) -> None:
    samples = [
        ("Say something.", " ".join(random.Random(i).choices(WORDS, k=5))) for i in range(12)
    ]
    before = score_texts(rm, tokenizer, samples)
    offset = calibrate_offset(rm, tokenizer, samples)
    after = score_texts(rm, tokenizer, samples)
    assert abs(after.mean().item()) < 1e-5
    assert offset == pytest.approx(-before.mean().item(), abs=1e-5)
    assert torch.allclose(after - before, torch.full_like(after, offset), atol=1e-5)
    assert getattr(rm.seq.config, OFFSET_KEY) == offset


def test_save_and_load_keep_scores_and_offset(rm: RewardModel, tokenizer, tmp_path: Path) -> None:
    samples = [("Hi.", "banana bread"), ("Hi.", "stone"), ("Another prompt, longer.", "x y z")]
    calibrate_offset(rm, tokenizer, samples)
    rm.reward_offset += 0.25
    folder = save_reward_model(rm, tokenizer, tmp_path / "rm")
    assert (folder / "model.safetensors").is_file()
    assert not [p for p in folder.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".pkl"}]
    assert json.loads((folder / "config.json").read_text())[OFFSET_KEY] == pytest.approx(
        rm.reward_offset
    )
    loaded, loaded_tokenizer = load_reward_model(str(folder), device="cpu", dtype="float32")
    assert loaded.reward_offset == pytest.approx(rm.reward_offset)
    expected = score_texts(rm, tokenizer, samples)
    assert torch.allclose(score_texts(loaded, loaded_tokenizer, samples), expected, atol=1e-5)


def test_saved_folder_scores_the_same_with_plain_transformers_pooling(
    rm: RewardModel, tokenizer, tmp_path: Path
) -> None:
    """TRL and pipelines pool at the last non-pad token by pad id: the folder makes that agree."""
    folder = save_reward_model(rm, tokenizer, tmp_path / "rm")
    plain = AutoModelForSequenceClassification.from_pretrained(folder)
    plain_tokenizer = AutoTokenizer.from_pretrained(folder)
    assert plain_tokenizer.pad_token_id != plain_tokenizer.eos_token_id
    [encoded] = encode_rankings(
        tokenizer, [RankedExample("Q?", ["short", "a longer answer"], [[0], [1]])], 64
    )
    ids, mask = pad_right(encoded.sequences, plain_tokenizer.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        logits = plain(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
        ours = rm(ids, mask)
    assert torch.allclose(logits + rm.reward_offset, ours, atol=1e-5)


def test_load_reward_model_from_a_causal_lm_spec(tiny: tuple) -> None:
    model, tokenizer = load_reward_model("tiny", device="cpu", dtype="float32")
    assert isinstance(model, RewardModel) and tokenizer.eos_token == tiny[1].eos_token
    assert torch.equal(model.seq.model.embed_tokens.weight, tiny[0].model.embed_tokens.weight)


def test_a_folder_with_only_a_pickle_is_refused(rm: RewardModel, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    rm.seq.config.architectures = ["LlamaForSequenceClassification"]
    rm.seq.config.to_json_file(folder / "config.json")
    torch.save(rm.seq.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pickle"):
        load_reward_model(str(folder))


def test_lora_training_saves_a_merged_plain_folder(
    rm: RewardModel, tokenizer, tmp_path: Path
) -> None:
    config = RMConfig(lr=1e-2, batch_size=4, max_length=32, lora_r=4)
    train_reward_model(rm, tokenizer, banana_rankings(4, seed=7), config=config)
    trainable = [name for name, p in rm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name or "score" in name for name in trainable)
    samples = [("Hi.", "banana bread"), ("Hi.", "stone")]
    expected = score_texts(rm, tokenizer, samples)
    folder = save_reward_model(rm, tokenizer, tmp_path / "rm")
    assert "lora" not in (folder / "config.json").read_text().lower()
    loaded, _ = load_reward_model(str(folder))
    assert torch.allclose(score_texts(loaded, tokenizer, samples), expected, atol=1e-4)


def test_lora_alpha_reaches_the_adapters(rm: RewardModel, tokenizer) -> None:
    config = RMConfig(lr=1e-2, batch_size=4, max_length=32, lora_r=4, lora_alpha=32)
    train_reward_model(rm, tokenizer, banana_rankings(4, seed=7), config=config)
    assert rm.seq.peft_config["default"].lora_alpha == 32  # type: ignore[index, union-attr]


def _prompted(prompt: object, index: int) -> RankedExample:
    return RankedExample(prompt, [f"a {index}", f"b {index}"], [[0], [1]])  # type: ignore[arg-type]


def test_split_eval_keeps_each_prompt_on_one_side() -> None:
    """Three rankings of each of ten prompts (one a chat equal in content to another copy):
    a prompt's rankings all land on one side, and the split is seeded."""
    prompts: list[object] = [f"Prompt {i}?" for i in range(9)]
    prompts.append([{"role": "user", "content": "A chat."}])
    examples = [_prompted(p, i) for i in range(3) for p in prompts]
    examples.append(_prompted([{"content": "A chat.", "role": "user"}], 3))  # same content
    random.Random(1).shuffle(examples)
    train, held_out = split_eval(examples, 0.3, seed=5)

    def key(example: RankedExample) -> str:
        return json.dumps(example.prompt, sort_keys=True)

    assert {key(e) for e in train}.isdisjoint({key(e) for e in held_out})
    assert len({key(e) for e in held_out}) == 3 and len(train) + len(held_out) == 31
    assert split_eval(examples, 0.3, seed=5) == (train, held_out)
    assert split_eval(examples, 0.3, seed=6) != (train, held_out)
    assert len(split_eval(examples, 0.01, seed=0)[1]) >= 3  # at least one prompt held out
    everything, none = split_eval(examples, 0.0, seed=0)
    assert none == [] and sorted(map(id, everything)) == sorted(map(id, examples))


def test_the_step_plan_is_the_one_plan_steps_counts(rm: RewardModel, tokenizer) -> None:
    config = RMConfig(batch_size=3, max_length=32, epochs=1.5)
    steps: list[int] = []
    result = train_reward_model(
        rm,
        tokenizer,
        banana_rankings(7, seed=4),
        config=config,
        on_metrics=lambda step, values: steps.append(values["total_steps"]),
    )
    assert plan_steps(7, config) == round(1.5 * 3) == result["steps"] == len(steps) == steps[0]
    assert plan_steps(0, config) == 1
