"""The events file: valid files, defaults, and every kind of bad input → EventsFileError with a useful message."""

from __future__ import annotations

import textwrap

import pytest

from longwatch.pipeline.errors import ConfigError, EventsFileError, LongwatchError
from longwatch.pipeline.events import (
    COCO_CLASSES,
    EventSpec,
    EventsSpec,
    coco_class_id,
    default_events,
    default_events_path,
    load_events,
    parse_events,
    suggest_classes,
)


def y(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


FULL = y("""
    # every field, both backends
    - event: person_present
      description: someone is in the room
      detector:
        class: person
        min_score: 0.5
        min_box_area: 0.01
        roi: [0.1, 0.0, 0.9, 1.0]
      on: 0.6
      off: 0.3
      min_duration_s: 2.5
      merge_gap_s: 0
      max_sample_gap_s: 10
    - event: moto
      detector: {class: motorcycle}
    - event: lights
      detector: {class: Traffic_Light, min_score: 0.25}
    - event: fall
      backend: qwen2_5_vl
      prompt: "a person falls to the ground"
      threshold: 0.7
""")


# -- valid files --------------------------------------------------------------------------------


def test_default_file_ships_and_validates():
    path = default_events_path()
    assert path.is_file() and path.name == "default_events.yaml"
    spec = default_events()
    names = spec.names
    assert {"person_present", "car_present"} <= set(names)
    assert len(names) >= 4 and len(set(names)) == len(names)
    assert spec.get("motion").backend == "motion" and spec.model_backends == ["detector"]
    for ev in spec.detector_events:
        assert ev.detector is not None
        assert ev.detector.class_name in COCO_CLASSES
        assert ev.on == ev.detector.min_score
        assert ev.off == pytest.approx(ev.on * 0.7)
    person = spec.get("person_present")
    assert person.detector.class_name == "person" and person.detector.class_id == 0
    assert spec.get("car_present").detector.class_id == 2


def test_defaults_filled_in():
    spec = load_events("- event: person_present\n  detector: {class: person}\n")
    ev = spec.get("person_present")
    assert ev.backend == "detector"
    assert ev.detector.min_score == 0.4
    assert ev.detector.min_box_area is None and ev.detector.roi is None
    assert ev.on == 0.4 and ev.off == pytest.approx(0.28)
    assert ev.min_duration_s == 1.0 and ev.merge_gap_s == 2.0 and ev.max_sample_gap_s is None
    assert ev.score_floor == pytest.approx(0.28)  # min(min_score, off): the hysteresis band is visible


def test_full_file_from_path(tmp_path):
    p = tmp_path / "events.yaml"
    p.write_text(FULL)
    for arg in (p, str(p)):
        spec = load_events(arg)
        assert spec.source == str(p)
        assert spec.names == ["person_present", "moto", "lights", "fall"]
    ev = spec.get("person_present")
    assert (ev.on, ev.off, ev.min_duration_s, ev.merge_gap_s, ev.max_sample_gap_s) == (0.6, 0.3, 2.5, 0.0, 10.0)
    assert ev.detector.roi == [0.1, 0.0, 0.9, 1.0] and ev.detector.min_box_area == 0.01
    assert ev.score_floor == 0.3
    # aliases and spellings are canonicalised to darknet's coco.names
    assert spec.get("moto").detector.class_name == "motorbike"
    assert spec.get("lights").detector.class_name == "traffic light"
    fall = spec.get("fall")
    assert fall.backend == "qwen2_5_vl" and fall.detector is None
    assert fall.prompt == "a person falls to the ground" and fall.threshold == 0.7
    assert fall.on == 0.7 and fall.off == pytest.approx(0.49)
    assert [e.event for e in spec.detector_events] == ["person_present", "moto", "lights"]
    assert [e.event for e in spec.by_backend("qwen2_5_vl")] == ["fall"]


def test_mapping_form_and_on_off_keys_are_not_booleans():
    # PyYAML's YAML 1.1 default would read the key `on` as True; ours reads it as the string "on".
    spec = load_events(
        y("""
        events:
          - event: a
            detector: {class: person}
            on: 0.5
            off: 0.1
    """)
    )
    assert (spec.get("a").on, spec.get("a").off) == (0.5, 0.1)
    spec = load_events("- event: yes_no\n  description: no\n  detector: {class: dog}\n")
    assert spec.get("yes_no").description == "no"


def test_events_spec_in_python():
    spec = EventsSpec(events=[EventSpec(event="p", detector={"class": "person"})])
    assert spec.get("p").on == 0.4
    with pytest.raises(ValueError, match="duplicate"):
        EventsSpec(events=[EventSpec(event="p", detector={"class": "person"})] * 2)
    with pytest.raises(KeyError):
        spec.get("nope")


def test_coco_helpers():
    assert len(COCO_CLASSES) == 80 and len(set(COCO_CLASSES)) == 80
    assert coco_class_id("person") == 0 and coco_class_id("TV") == COCO_CLASSES.index("tvmonitor")
    assert coco_class_id("potted_plant") == COCO_CLASSES.index("pottedplant")
    assert coco_class_id("cell-phone") == COCO_CLASSES.index("cell phone")
    with pytest.raises(KeyError):
        coco_class_id("unicorn")
    assert suggest_classes("persn")[0] == "person"
    assert "truck" in suggest_classes("truk")


# -- bad input ----------------------------------------------------------------------------------

BAD = [
    # (id, yaml, expected line, substrings of the message)
    ("malformed-flow", "- event: a\n  detector: {class: person\n", 3, ["malformed YAML", "flow mapping"]),
    ("malformed-indent", "- event: a\n   detector: {class: person}\n  on: 1\n", 2, ["malformed YAML"]),
    ("tab", "- event: a\n\tdetector: {class: person}\n", 2, ["malformed YAML", "'\\t'"]),
    ("two-documents", "- event: a\n  detector: {class: person}\n---\n- event: b\n", 3, ["malformed YAML"]),
    ("not-a-list", "person_present\n", 1, ["must be a list of events"]),
    ("empty-list", "[]\n", 1, ["list of events is empty"]),
    ("item-not-mapping", "- person_present\n", 1, ["event #1", "must be a mapping"]),
    ("unknown-top-key", "evnts:\n  - event: a\n", 1, ["unknown top-level key 'evnts'"]),
    (
        "unknown-event-key",
        "- event: a\n  detector: {class: person}\n  treshold: 0.5\n",
        3,
        ["event 'a' (#1)", "unknown key 'treshold'", "did you mean 'threshold'", "allowed:"],
    ),
    (
        "unknown-detector-key",
        "- event: a\n  detector:\n    class: person\n    min_scor: 0.2\n",
        4,
        ["detector: unknown key 'min_scor'", "did you mean 'min_score'"],
    ),
    ("missing-event", "- detector: {class: person}\n", 1, ["event #1", "missing required key 'event'"]),
    ("missing-class", "- event: a\n  detector:\n    min_score: 0.3\n", 2, ["detector: missing required key 'class'"]),
    ("missing-detector", "- event: a\n", 1, ["backend 'detector' needs a 'detector:' block"]),
    (
        "qwen-missing-threshold",
        "- event: f\n  backend: qwen2_5_vl\n  prompt: a fall\n",
        1,
        ["backend 'qwen2_5_vl' needs 'threshold'"],
    ),
    (
        "qwen-with-detector",
        "- event: f\n  backend: qwen2_5_vl\n  prompt: x\n  threshold: 0.5\n  detector: {class: person}\n",
        1,
        ["belongs to backend 'detector'"],
    ),
    ("detector-with-prompt", "- event: a\n  detector: {class: person}\n  prompt: hi\n", 1, ["'prompt'", "qwen2_5_vl"]),
    (
        "bad-backend",
        "- event: a\n  backend: yolo\n  detector: {class: person}\n",
        2,
        ["backend", "'detector', 'qwen2_5_vl' or 'motion'", "'yolo'"],
    ),
    ("bad-name", "- event: 1st-person\n  detector: {class: person}\n", 1, ["identifier-like", "'1st-person'"]),
    ("name-with-brace", "- event: 'a{b}'\n  detector: {class: person}\n", 1, ["identifier-like"]),
    (
        "duplicate-name",
        "- event: a\n  detector: {class: person}\n- event: a\n  detector: {class: car}\n",
        3,
        ["duplicate event name 'a'", "event #1"],
    ),
    (
        "duplicate-key",
        "- event: a\n  detector: {class: person}\n  detector: {class: car}\n",
        3,
        ["'detector' appears more than once"],
    ),
    (
        "score-text",
        "- event: a\n  detector: {class: person, min_score: high}\n",
        2,
        ["detector.min_score", "valid number", "'high'"],
    ),
    (
        "score-range",
        "- event: a\n  detector: {class: person, min_score: 1.5}\n",
        2,
        ["detector.min_score", "less than or equal to 1"],
    ),
    ("score-bool", "- event: a\n  detector: {class: person, min_score: true}\n", 2, ["detector.min_score"]),
    ("roi-short", "- event: a\n  detector: {class: person, roi: [0, 0, 1]}\n", 2, ["detector.roi", "four numbers"]),
    ("roi-order", "- event: a\n  detector: {class: person, roi: [0.8, 0, 0.2, 1]}\n", 2, ["x0 < x1"]),
    ("roi-range", "- event: a\n  detector: {class: person, roi: [0, 0, 2, 1]}\n", 2, ["between 0 and 1"]),
    ("area-negative", "- event: a\n  detector: {class: person, min_box_area: -0.1}\n", 2, ["min_box_area"]),
    (
        "off-above-on",
        "- event: a\n  detector: {class: person}\n  on: 0.3\n  off: 0.5\n",
        1,
        ["'off' (0.5) must not exceed 'on' (0.3)"],
    ),
    ("on-zero", "- event: a\n  detector: {class: person}\n  on: 0\n", 3, ["on", "greater than 0"]),
    ("min-score-zero", "- event: a\n  detector: {class: person, min_score: 0}\n", 1, ["set 'on'"]),
    ("negative-duration", "- event: a\n  detector: {class: person}\n  min_duration_s: -1\n", 3, ["min_duration_s"]),
    ("class-number", "- event: a\n  detector: {class: 3}\n", 2, ["COCO class name"]),
]


@pytest.mark.parametrize("text,line,expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_rejected_with_a_clear_message(text, line, expected):
    with pytest.raises(EventsFileError) as info:
        load_events(text)
    err = info.value
    assert isinstance(err, ConfigError) and isinstance(err, ValueError) and isinstance(err, LongwatchError)
    msg = str(err)
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"
    assert err.line == line, msg
    assert f"line {line}" in msg
    assert err.problems and all(isinstance(p, str) for p in err.problems)


def test_unknown_class_suggests_close_matches(tmp_path):
    p = tmp_path / "ev.yaml"
    p.write_text(
        y("""
        - event: person_present
          detector: {class: persn}
        - event: truck_present
          detector:
            class: truk
        - event: ok
          detector: {class: car}
        - event: unicorn_present
          detector: {class: unicorn}
    """)
    )
    with pytest.raises(EventsFileError) as info:
        load_events(p)
    err = info.value
    msg = str(err)
    assert str(p) in msg and err.path == str(p)
    assert "3 problems" in msg and len(err.problems) == 3  # every problem at once, in line order
    assert (
        "line 2: event 'person_present' (#1): detector.class: unknown COCO class 'persn'; did you mean 'person'?" in msg
    )
    assert "line 5: event 'truck_present' (#2): detector.class: unknown COCO class 'truk'; did you mean 'truck'" in msg
    assert "line 9: event 'unicorn_present' (#4): detector.class: unknown COCO class 'unicorn'" in msg
    assert err.line == 2


def test_file_problems(tmp_path):
    with pytest.raises(EventsFileError, match="does not exist"):
        load_events(tmp_path / "missing.yaml")
    with pytest.raises(EventsFileError, match="does not exist"):
        load_events(str(tmp_path / "missing.yml"))
    with pytest.raises(EventsFileError, match="not a regular file"):
        load_events(tmp_path)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    with pytest.raises(EventsFileError, match="is empty"):
        load_events(empty)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(EventsFileError, match="not UTF-8"):
        load_events(binary)
    with pytest.raises(EventsFileError, match="is empty"):
        load_events("")
    with pytest.raises(EventsFileError, match="expected a path or YAML text"):
        load_events(42)  # type: ignore[arg-type]


def test_parse_events_names_its_source():
    with pytest.raises(EventsFileError, match=r"events file cli-arg is invalid"):
        parse_events("- event: a\n  detector: {class: persn}\n", source="cli-arg")


def test_motion_events_zones_and_counts():
    spec = load_events(
        "- event: moving\n  backend: motion\n  motion: {min_area: 0.01, roi: [0, 0.5, 1, 1]}\n"
        "- event: crowd\n  detector: {class: person, min_count: 2, zone: [[0, 0], [1, 0], [0.5, 1]]}\n"
    )
    moving, crowd = spec.get("moving"), spec.get("crowd")
    assert moving.on == 0.5 and moving.hold_on_motion is None and spec.model_backends == ["detector"]
    assert moving.motion.polygon == [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]
    assert crowd.detector.min_count == 2 and len(crowd.detector.zone) == 3
    bad = [
        ("- event: m\n  backend: motion\n  motion: {min_aera: 0.01}\n", "did you mean 'min_area'"),
        ("- event: m\n  backend: motion\n  motion: {zone: [[0, 0], [1, 1]]}\n", "at least 3"),
        ("- event: m\n  backend: motion\n  motion: {zone: [[0, 0], [1, 1], [0.5, 0.5]]}\n", "encloses no area"),
        ("- event: m\n  backend: motion\n  motion: {zone: [[0, 0], [1, 0], [1, 2]]}\n", "point 3"),
        ("- event: m\n  backend: motion\n  prompt: x\n", "do not belong to backend 'motion'"),
        ("- event: m\n  detector: {class: person}\n  motion: {min_area: 0.1}\n", "belongs to backend 'motion'"),
        ("- event: c\n  detector: {class: person, min_count: 0}\n", "min_count"),
    ]
    for text, expected in bad:
        with pytest.raises(EventsFileError) as info:
            load_events(text)
        assert expected in str(info.value) and "line" in str(info.value), (text, str(info.value))
