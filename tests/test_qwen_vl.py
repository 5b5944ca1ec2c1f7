"""Qwen2.5-VL backend on CPU with a tiny randomly initialised model (no download).

The checkpoint (config, weights, a WordLevel tokenizer with the Qwen special tokens and a chat template,
the Qwen2-VL image/video processor configs) is built by ``make_tiny_checkpoint`` (``tests/tiny_qwen.py``) and
loaded back through ``QwenVLBackend.load``, the same code that loads a real checkpoint.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
transformers = pytest.importorskip("transformers")

from transformers import Qwen2_5_VLProcessor  # noqa: E402
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor  # noqa: E402
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor  # noqa: E402
from transformers.video_utils import VideoMetadata  # noqa: E402

from longwatch.model.answers import clip_span, frame_scores, parse_span, says_absent  # noqa: E402
from longwatch.model.backend import Backend  # noqa: E402
from longwatch.model.position_ids import uniform_temporal_ids  # noqa: E402
from longwatch.model.qwen_vl import QwenVLBackend  # noqa: E402
from longwatch.pipeline.errors import (  # noqa: E402
    ConfigError,
    EventsFileError,
    ModelArchitectureError,
    ModelError,
    ModelNotFoundError,
    ModelUnavailableError,
    ModelWeightsError,
)
from longwatch.pipeline.events import load_events  # noqa: E402
from longwatch.pipeline.types import Clip  # noqa: E402
from tests.tiny_qwen import make_tiny_checkpoint  # noqa: E402

EPOCH = datetime(2024, 5, 1, 6, 0, 0, tzinfo=UTC)
EVENTS_YAML = """
- event: person_present
  detector: {class: person}
- event: fall
  backend: qwen2_5_vl
  prompt: "a person falls to the ground"
  threshold: 0.5
- event: truck_backs
  backend: qwen2_5_vl
  prompt: "a truck backs into the dock"
  threshold: 0.3
"""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-qwen2_5_vl"))


@pytest.fixture(scope="module")
def backend(tiny_dir):
    return QwenVLBackend.load(tiny_dir, dtype="fp32", attn="sdpa", device="cpu")


@pytest.fixture(autouse=True)
def _reset(backend):
    backend.strategy, backend.ground_mode = "prefix", "positive"
    backend.events = []
    backend.stats.clear()


def make_clip(stream="cam", n=4, h=56, w=84, fps=2.0, start=0.0, index=0, seed=0) -> Clip:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    return Clip(stream, index, fps, start + np.arange(n) / fps, frames, epoch=EPOCH)


# ----------------------------------------------------------------------------------------------
# Inputs: ours vs transformers' processor


def _processor(backend):
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(),
        tokenizer=backend.tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=backend.chat_template,
    )


@pytest.mark.parametrize("n,h,w,fps", [(4, 56, 84, 2.0), (6, 84, 56, 4.0), (5, 56, 56, 1.0)])
def test_our_inputs_equal_the_processors_and_give_the_same_logits(backend, n, h, w, fps):
    clip = make_clip(n=n, h=h, w=w, fps=fps, start=12.5)
    question = backend.score_question("a person falls")
    ours = backend.build_inputs([clip], [question])
    video = torch.from_numpy(clip.frames).permute(0, 3, 1, 2)
    theirs = _processor(backend)(
        text=[backend.render(question)],
        videos=[video],
        return_tensors="pt",
        videos_kwargs=dict(
            do_resize=False, do_sample_frames=False, video_metadata=[VideoMetadata(total_num_frames=n, fps=fps)]
        ),
    )
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    assert torch.equal(ours["mm_token_type_ids"].long(), theirs["mm_token_type_ids"].long())
    assert torch.equal(ours["video_grid_thw"], theirs["video_grid_thw"])
    assert ours["second_per_grid_ts"].tolist() == pytest.approx(theirs["second_per_grid_ts"].tolist())
    assert (ours["pixel_values_videos"] - theirs["pixel_values_videos"]).abs().max().item() <= 1e-6
    n_pad = int((ours["input_ids"] == backend.video_id).sum())
    t, gh, gw = ours["video_grid_thw"][0].tolist()
    assert n_pad == t * gh * gw // 4

    pos = ours["position_ids"]
    assert pos.shape == (3, 1, ours["input_ids"].shape[1])
    model = backend.model
    with torch.inference_mode():
        ref = model(**{k: v for k, v in theirs.items()}, position_ids=pos).logits
        mine = model(**ours).logits
        reused = backend.next_token_logits([clip], [question])[0, 0]  # vision once, inputs_embeds, KV prefix
    assert (mine - ref).abs().max().item() <= 1e-5
    assert (reused - ref[0, -1]).abs().max().item() <= 1e-5


def _reference_rope_index(input_ids, grid_thw, second_per_grid_t, tokens_per_second, vision_start_id, merge=2):
    """transformers 4.5x ``Qwen2_5_VLModel.get_rope_index`` for one sequence with one video (the original rule)."""
    ids = input_ids.tolist()
    v = ids.index(vision_start_id) + 1
    t, h, w = grid_thw
    lh, lw = h // merge, w // merge
    text_len = v
    parts = [torch.arange(text_len).view(1, -1).expand(3, -1)]
    t_index = (torch.arange(t).view(-1, 1).expand(-1, lh * lw) * second_per_grid_t * tokens_per_second).long().flatten()
    h_index = torch.arange(lh).view(1, -1, 1).expand(t, -1, lw).flatten()
    w_index = torch.arange(lw).view(1, 1, -1).expand(t, lh, -1).flatten()
    parts.append(torch.stack([t_index, h_index, w_index]) + text_len)
    st = int(parts[-1].max()) + 1
    rest = len(ids) - (v + t * lh * lw)
    parts.append(torch.arange(rest).view(1, -1).expand(3, -1) + st)
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("fps", [1.0, 2.0, 4.0, 8.0])
def test_position_ids_follow_the_original_rule(backend, fps):
    clip = make_clip(n=8, fps=fps, start=100.0)
    inputs = backend.build_inputs([clip], [backend.score_question("a car enters")])
    ours = inputs["position_ids"][:, 0]
    grid = inputs["video_grid_thw"][0].tolist()
    spgt = inputs["second_per_grid_ts"][0].item()
    assert spgt == pytest.approx(2.0 / fps)
    ref = _reference_rope_index(inputs["input_ids"][0], grid, spgt, 2, backend.vision_start_id)
    assert torch.equal(ours, ref)
    video = inputs["mm_token_type_ids"][0] == 2
    t_ids = ours[0, video].view(grid[0], -1)[:, 0] - int(video.nonzero()[0])  # offset: the text before the video
    assert t_ids.tolist() == uniform_temporal_ids(grid[0], 2.0 / fps).tolist()
    assert t_ids.tolist() == [int(k * (2.0 / fps) * 2) for k in range(grid[0])]  # fps>2: fractional, never 0 for all
    # transformers 5.23's own rope index agrees on the video tokens but continues text after the video at
    # start + max(h, w)/merge instead of max + 1: why we always pass our own.
    theirs, _ = backend.model.model.get_rope_index(
        inputs["input_ids"],
        mm_token_type_ids=inputs["mm_token_type_ids"],
        video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"],
        attention_mask=inputs["attention_mask"],
    )
    assert torch.equal(theirs[:, 0, : int(video.nonzero().max()) + 1], ours[:, : int(video.nonzero().max()) + 1])
    after = int(video.nonzero().max()) + 1
    assert int(ours[0, after]) == int(ours[:, :after].max()) + 1
    if fps == 1.0:  # t ids 0, 4, 8, 12 reach past the 2×3 grid: the two rules part
        assert not torch.equal(theirs[:, 0], ours)


def test_variable_frame_times_give_time_true_ids(backend):
    """A PTS gap shows up in the temporal ids (our times), where the uniform rule would not see it."""
    clip = make_clip(n=6, fps=2.0, start=50.0)
    clip = Clip(clip.stream_id, 0, 2.0, np.array([50.0, 50.5, 53.0, 53.5, 54.0, 54.5]), clip.frames, epoch=EPOCH)
    p = backend.prepare(clip)
    assert p.span.t_ids.tolist() == [0, 6, 8]
    assert uniform_temporal_ids(3, 1.0).tolist() == [0, 2, 4]


# ----------------------------------------------------------------------------------------------
# Scoring, strategies, batching


def test_two_clips_of_different_sizes_batched_equal_alone(backend):
    a = make_clip("cam-a", n=4, h=56, w=84, fps=2.0, start=10.0, seed=1)
    b = make_clip("cam-b", n=6, h=84, w=112, fps=4.0, start=3.0, seed=2)
    questions = [backend.score_question(p) for p in ("a person falls", "a truck backs into the dock")]
    for strategy in ("prefix", "batched", "reencode"):
        backend.strategy = strategy
        assert backend.plan_batches([backend.prepare(a), backend.prepare(b)], 2) == [[0, 1]]
        both = backend.next_token_logits([a, b], questions)
        alone_a = backend.next_token_logits([a], questions)[0]
        alone_b = backend.next_token_logits([b], questions)[0]
        assert torch.isfinite(both).all()
        assert (both[0] - alone_a).abs().max().item() <= 1e-4, strategy
        assert (both[1] - alone_b).abs().max().item() <= 1e-4, strategy
        if strategy == "prefix":
            first = both
        else:
            assert (both - first).abs().max().item() <= 1e-5, strategy
    probs = backend.yes_probs([a, b], ["a person falls", "a truck backs into the dock"])
    assert probs.shape == (2, 2) and np.all((probs > 0) & (probs < 1))


def test_video_encoded_once_per_batch_and_reused_for_every_question(backend):
    spec = load_events(EVENTS_YAML)
    backend.set_events(spec)
    backend.ground_mode = "never"
    clips = [make_clip("a", seed=3), make_clip("b", n=6, h=84, w=56, fps=4.0, seed=4)]
    backend.score(clips)
    assert backend.stats["vision_calls"] == 1  # two clips, two events: one vision-tower call
    assert backend.stats["forward_passes"] == 1 + 2  # the shared prefix once, then one suffix per question
    backend.stats.clear()
    backend.strategy = "batched"
    backend.score(clips)
    assert backend.stats["vision_calls"] == 1 and backend.stats["forward_passes"] == 1


def test_token_budget_splits_batches(backend):
    clips = [make_clip(str(i), n=4, h=56 + 28 * (i % 2), w=84, seed=i) for i in range(5)]
    prepared = [backend.prepare(c) for c in clips]
    one = backend._cost(prepared[:1], 1)
    backend.max_batch_tokens, backend.max_batch_clips = one * 2 + 40, 16
    try:
        batches = backend.plan_batches(prepared, 1)
        assert sorted(i for b in batches for i in b) == list(range(5)) and len(batches) >= 3
        assert all(backend._cost([prepared[i] for i in b], 1) <= backend.max_batch_tokens for b in batches)
        backend.max_batch_tokens = 10  # smaller than any clip: each goes alone, counted
        assert backend.plan_batches(prepared, 1) == [[0], [1], [2], [3], [4]]
        assert backend.stats["over_budget_clips"] == 5
        backend.max_batch_tokens, backend.max_batch_clips = 10**6, 2
        assert backend.plan_batches(prepared, 1) == [[0, 1], [2, 3], [4]]
    finally:
        backend.max_batch_tokens, backend.max_batch_clips = 32768, 16


def test_never_falls_back_to_transformers_rope_index(backend, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("transformers' own rope index must not run")

    monkeypatch.setattr(backend.model.model, "get_rope_index", boom)
    monkeypatch.setattr(backend.model.model, "compute_3d_position_ids", boom)
    backend.set_events(load_events(EVENTS_YAML))
    backend.ground_mode = "always"
    clips = [make_clip("a", seed=5), make_clip("b", n=6, h=84, w=112, fps=4.0, seed=6)]
    for strategy in ("prefix", "batched", "reencode"):
        backend.strategy = strategy
        out = backend.infer(clips)
        assert [set(r.probs) for r in out] == [{"fall", "truck_backs"}] * 2
    with pytest.raises(ModelError, match=r"\(3, B, L\)"):
        ids = torch.tensor([[1, 2, 3]])
        backend._forward(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=torch.arange(3)[None])


def test_score_has_the_detector_shape(backend):
    assert isinstance(backend, Backend)  # the protocol the detector implements too
    backend.set_events(load_events(EVENTS_YAML))
    assert backend.event_names == ["fall", "truck_backs"]
    clips = [make_clip("a", n=5, seed=7), make_clip("b", n=4, h=84, w=56, fps=1.0, seed=8)]
    out = backend.score(clips)
    assert len(out) == 2
    for clip, scores in zip(clips, out):
        assert set(scores) == {"fall", "truck_backs"}
        for s in scores.values():
            assert s.shape == clip.times.shape and s.dtype == np.float64 and np.all((s >= 0) & (s <= 1))
    backend.events = []
    assert backend.score(clips) == [{}, {}]


def test_bf16_load_runs(tiny_dir):
    be = QwenVLBackend.load(tiny_dir, dtype="bf16", device="cpu")
    assert be.model.dtype == torch.bfloat16
    p = be.yes_probs([make_clip()], ["a person falls"])
    assert p.shape == (1, 1) and 0 < p[0, 0] < 1


# ----------------------------------------------------------------------------------------------
# Grounding


@pytest.mark.parametrize(
    "text,span",
    [
        ("3.5-7", (3.5, 7.0)),
        ("3.5 - 7.0 seconds", (3.5, 7.0)),
        ("3.5–7.0s", (3.5, 7.0)),
        ("from 3 to 7 seconds", (3.0, 7.0)),
        ("The event happens between 2.25 and 4.5.", (2.25, 4.5)),
        ('{"start": 1.5, "end": 2}', (1.5, 2.0)),
        ('```json\n{"start_time": "0:03", "end_time": "0:07.5"}\n```', (3.0, 7.5)),
        ("[0.5, 6]", (0.5, 6.0)),
        ("00:01:05-00:01:10", (65.0, 70.0)),
        ("start: 2s, end: 3s", (2.0, 3.0)),
    ],
)
def test_parse_span_accepts_common_forms(text, span):
    assert parse_span(text) == pytest.approx(span)


@pytest.mark.parametrize(
    "text", ["", "   ", "yes", "at 3 seconds", "{not json", "[[[", "nan-inf", None, 42, "🙂" * 5000]
)
def test_parse_span_never_raises_on_junk(text):
    assert parse_span(text) is None


def test_absent_answers_are_not_malformed():
    assert says_absent("none") and says_absent("No, it does not happen.")
    assert not says_absent("3-4") and not says_absent("qwerty")


def test_grounding_maps_through_stream_time_clamps_and_drops_malformed(backend, monkeypatch):
    clip = make_clip("dock", n=8, fps=2.0, start=100.0, index=7)  # covers stream seconds [100, 104)
    answers = iter(["1-2.5", "none", "garbage ?!", "3-99", "7-3", "9-12", '{"start": 0.5, "end": 1}'])
    monkeypatch.setattr(backend, "_generate", lambda rows, embeds: [next(answers) for _ in rows])
    prompts = [f"event {i}" for i in range(7)]
    spans = backend.ground([clip], prompts)[0]
    assert backend.stats["ground_answers"] == 7
    assert backend.stats["grounded"] == 3
    assert backend.stats["absent"] == 1
    assert backend.stats["malformed"] == 3  # garbage, reversed, entirely after the clip
    s = spans[0][0]
    assert (s.rel_start, s.rel_end, s.start, s.end) == (1.0, 2.5, 101.0, 102.5)
    assert s.start_utc == EPOCH + timedelta(seconds=101.0) and s.stream_id == "dock" and s.clip_index == 7
    clamped = spans[3][0]
    assert (clamped.start, clamped.end) == (103.0, 104.0)  # clamped to the clip's end
    assert spans[1] == [] and spans[2] == [] and spans[4] == [] and spans[5] == []
    scores = frame_scores(clip, 0.8, [s])
    assert scores.tolist() == [0, 0, 0.8, 0.8, 0.8, 0.8, 0, 0]  # frames at 101, 101.5, 102, 102.5


def test_grounding_of_positive_clips_feeds_per_frame_scores(backend, monkeypatch):
    backend.set_events(load_events(EVENTS_YAML.replace("threshold: 0.5", "threshold: 0.01")))  # "fall" always positive
    backend.events[1].on = 1.0  # "truck_backs" never
    monkeypatch.setattr(backend, "_generate", lambda rows, embeds: ["from 0.5 to 1 seconds"] * len(rows))
    clip = make_clip("a", n=4, fps=2.0, start=20.0)
    res = backend.infer([clip])[0]
    assert [s.event for s in res.spans["fall"]] == ["fall"] and "truck_backs" not in res.spans
    assert (res.spans["fall"][0].start, res.spans["fall"][0].end) == (20.5, 21.0)
    p = res.probs["fall"]
    assert res.scores["fall"].tolist() == pytest.approx([0, p, p, 0])
    assert res.scores["truck_backs"].tolist() == pytest.approx([res.probs["truck_backs"]] * 4)


def test_real_generation_with_the_tiny_model_never_raises(backend):
    backend.ground_mode = "always"
    backend.max_new_tokens = 6
    try:
        backend.set_events(load_events(EVENTS_YAML))
        out = backend.infer([make_clip("a", seed=9), make_clip("b", n=6, h=84, w=112, fps=4.0, seed=10)])
    finally:
        backend.max_new_tokens = 24
    assert backend.stats["ground_answers"] == 4
    assert backend.stats["grounded"] + backend.stats["absent"] + backend.stats["malformed"] == 4
    assert all(len(r.scores) == 2 for r in out)


def test_clip_span_rules():
    clip = make_clip(n=4, fps=2.0, start=5.0)  # duration 2 s
    assert clip_span(clip, 0.5, 1.0) == (0.5, 1.0)
    assert clip_span(clip, -1.0, 1.0) == (0.0, 1.0)
    assert clip_span(clip, 1.0, 9.0) == (1.0, 2.0)
    assert clip_span(clip, 3.0, 4.0) is None and clip_span(clip, 1.0, 0.5) is None


# ----------------------------------------------------------------------------------------------
# Loading errors and the events file


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        QwenVLBackend.load(tmp_path / "no-such-model", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        QwenVLBackend.load(tmp_path / "empty", device="cpu")


def test_wrong_architecture_is_a_clear_error(tmp_path, tiny_dir):
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = tmp_path / "llama"
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    ).save_pretrained(llama)
    with pytest.raises(ModelArchitectureError, match="model_type='llama'"):
        QwenVLBackend.load(llama, device="cpu")
    # a Qwen2.5-VL config.json over Llama weights: the weights do not fit (never silently random)
    shutil.copy(tiny_dir / "config.json", llama / "config.json")
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny_dir / f).exists():
            shutil.copy(tiny_dir / f, llama / f)
    with pytest.raises(ModelWeightsError):
        QwenVLBackend.load(llama, device="cpu", dtype="fp32")


def test_processor_constants_that_do_not_match_our_patches(tmp_path, tiny_dir):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    pre = json.loads((bad / "preprocessor_config.json").read_text())
    pre["patch_size"] = 16
    (bad / "preprocessor_config.json").write_text(json.dumps(pre))
    with pytest.raises(ModelArchitectureError, match="patch_size"):
        QwenVLBackend.load(bad, device="cpu")


def test_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for hub_id in ("longwatch-tests/not-cached-anywhere", "Qwen/Qwen2.5-VL-3B-Instruct-not-here"):
        with pytest.raises(ModelUnavailableError, match="offline|local hub cache"):
            QwenVLBackend.load(hub_id, device="cpu", local_files_only=False)


def test_bad_options_are_config_errors(tiny_dir):
    with pytest.raises(ConfigError, match="dtype"):
        QwenVLBackend.load(tiny_dir, dtype="int3", device="cpu")
    with pytest.raises(ConfigError, match="attn"):
        QwenVLBackend.load(tiny_dir, attn="magic", device="cpu")
    with pytest.raises(ConfigError, match="flash_attention_2"):
        QwenVLBackend.load(tiny_dir, attn="flash_attention_2", device="cpu")


def test_events_yaml_with_qwen_backend_is_validated(backend):
    spec = load_events(EVENTS_YAML)
    fall = spec.get("fall")
    assert fall.backend == "qwen2_5_vl" and fall.prompt == "a person falls to the ground"
    assert fall.on == 0.5 and fall.off == pytest.approx(0.35)
    backend.set_events(spec)
    assert backend.event_names == ["fall", "truck_backs"]
    with pytest.raises(EventsFileError, match="needs 'threshold'"):
        load_events("- event: fall\n  backend: qwen2_5_vl\n  prompt: a person falls\n")
    with pytest.raises(EventsFileError, match="prompt"):
        load_events("- event: fall\n  backend: qwen2_5_vl\n  prompt: ''\n  threshold: 0.5\n")
    with pytest.raises(EventsFileError, match="detector"):
        load_events(
            "- event: fall\n  backend: qwen2_5_vl\n  prompt: x\n  threshold: 0.5\n  detector: {class: person}\n"
        )
